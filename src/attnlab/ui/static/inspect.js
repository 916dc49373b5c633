// The Inspect screen (being built).
"use strict";

screens.inspect = {
  init() {},
};
