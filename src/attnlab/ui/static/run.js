// The Run screen (being built).
"use strict";

screens.run = {
  init() {},
};
