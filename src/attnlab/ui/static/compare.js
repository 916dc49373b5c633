// The Compare screen (being built).
"use strict";

screens.compare = {
  init() {},
};
