// eotiler's Sentinel Hub evalscript runtime: the globals an evalscript expects, plus the driver
// that runs evaluatePixel over a whole tile inside V8. Semantics: Sentinel Hub's "Evalscript V3"
// and "Utility Functions" documentation; the doc examples each helper reproduces are in
// tests/test_js_helpers.py.
// Loaded once per V8 context, before the user's script; nothing here can reach files or network.

const JAVA_DOUBLE_MAX_VAL = 1.7976931348623157e308;
const SampleType = Object.freeze({
  AUTO: "AUTO", UINT8: "UINT8", UINT16: "UINT16", INT8: "INT8", INT16: "INT16", FLOAT32: "FLOAT32",
});
const Mosaicking = Object.freeze({ SIMPLE: "SIMPLE", ORBIT: "ORBIT", TILE: "TILE" });

function index(x, y) {
  const sum = x + y;
  return sum === 0 ? 0 : (x - y) / sum;
}

function inverse(x) {
  return x === 0 ? JAVA_DOUBLE_MAX_VAL : 1 / x;
}

// Intervals are (from, to]: v <= i0 -> values[0]; i(k-1) < v <= i(k) -> values[k]; above -> last.
function valueMap(value, intervals, values) {
  if (!intervals || intervals.length === 0) return value;
  for (let k = 0; k < intervals.length; k++) {
    if (value <= intervals[k]) return values[k];
  }
  return values[values.length - 1];
}

// slope * (value - x0) + y0, the operation order of numpy.interp, so JavaScript and numpy
// twins of a script round identically.
function __lerp(a, b, dx, run) {
  if (Array.isArray(a)) {
    const out = new Array(a.length);
    for (let i = 0; i < a.length; i++) out[i] = ((b[i] - a[i]) / run) * dx + a[i];
    return out;
  }
  return ((b - a) / run) * dx + a;
}

// Piecewise linear through (intervals[k], values[k]); clamped to the end values outside.
function valueInterpolate(value, intervals, values) {
  if (!intervals || intervals.length === 0) return value;
  const last = intervals.length - 1;
  if (value <= intervals[0]) return values[0];
  for (let k = 1; k <= last; k++) {
    if (value === intervals[k]) return values[k];
    if (value < intervals[k]) {
      return __lerp(values[k - 1], values[k], value - intervals[k - 1], intervals[k] - intervals[k - 1]);
    }
  }
  return values[last]; // above the range, and NaN
}
const colorBlend = valueInterpolate;

function combine(color1, color2, alpha) {
  if (Array.isArray(color1)) return color1.map((c, i) => alpha * c + (1 - alpha) * color2[i]);
  return alpha * color1 + (1 - alpha) * color2;
}

function int2rgb(color) {
  return [(color >> 16) & 0xff, (color >> 8) & 0xff, color & 0xff];
}

function rgb2int(color) {
  return ((color[0] & 0xff) << 16) | ((color[1] & 0xff) << 8) | (color[2] & 0xff);
}

function normalizeRGB(rgb255Array) {
  return rgb255Array.map((c) => c / 255);
}

// A colour stop as 0..255 components: 0xRRGGBB, or [r, g, b] in 0..1.
function __rgb255(color) {
  return Array.isArray(color) ? color.map((c) => c * 255) : int2rgb(color);
}

// Ramps interpolate in 0..255 space; ``round`` picks floor (ColorRamp) or rounding
// (ColorGradient), which is what the documented examples of each imply.
class __RampBase {
  constructor(valColPairs, minVal, maxVal, round) {
    const pairs = valColPairs.map((p) => [p[0], __rgb255(p[1])]).sort((a, b) => a[0] - b[0]);
    if (minVal !== undefined && maxVal !== undefined && pairs.length > 1) {
      const lo = pairs[0][0];
      const span = pairs[pairs.length - 1][0] - lo;
      for (const p of pairs) p[0] = minVal + ((p[0] - lo) / span) * (maxVal - minVal);
    }
    this.pairs = pairs;
    this.round = round;
  }

  process(value) {
    const pairs = this.pairs;
    const last = pairs.length - 1;
    let color;
    if (!(value > pairs[0][0])) {
      color = value <= pairs[0][0] ? pairs[0][1] : pairs[last][1];
    } else if (value >= pairs[last][0]) {
      color = pairs[last][1];
    } else {
      let k = 1;
      while (value > pairs[k][0]) k++;
      const t = (value - pairs[k - 1][0]) / (pairs[k][0] - pairs[k - 1][0]);
      const a = pairs[k - 1][1];
      const b = pairs[k][1];
      color = [this.round(a[0] + (b[0] - a[0]) * t), this.round(a[1] + (b[1] - a[1]) * t),
        this.round(a[2] + (b[2] - a[2]) * t)];
    }
    return [color[0] / 255, color[1] / 255, color[2] / 255];
  }
}

// Preset tables list positions from 1 down to 0; they are applied as (1 - position).
const blueRed = [[1.0, 0x000080], [0.875, 0x0000ff], [0.625, 0x00ffff], [0.375, 0xffff00], [0.125, 0xff0000],
  [0.0, 0x800000]];
const redTemperature = [[1.0, 0x000000], [0.525, 0xae0000], [0.3, 0xff6e00], [0.25, 0xff8600], [0.0, 0xffffff]];
const greenWhite = [[1.0, 0x000000], [0.6, 0x006600], [0.3, 0x80b300], [0.0, 0xffffff]];
const oceanColor = [
  [0.0, [147, 0, 108]], [0.0471, [111, 0, 144]], [0.098, [72, 0, 183]], [0.149, [33, 0, 222]],
  [0.2, [0, 10, 255]], [0.2471, [0, 74, 255]], [0.298, [0, 144, 255]], [0.349, [0, 213, 255]],
  [0.4, [0, 255, 215]], [0.4471, [0, 255, 119]], [0.498, [0, 255, 15]], [0.549, [96, 255, 0]],
  [0.6, [200, 255, 0]], [0.6471, [255, 235, 0]], [0.698, [255, 183, 0]], [0.749, [255, 131, 0]],
  [0.8, [255, 79, 0]], [0.8471, [255, 31, 0]], [0.898, [230, 0, 0]], [0.949, [165, 0, 0]], [1.0, [105, 0, 0]],
].map((p) => [p[0], normalizeRGB(p[1])]);

function __preset(table, minVal, maxVal, flip) {
  const lo = minVal === undefined ? 0 : minVal;
  const hi = maxVal === undefined ? 1 : maxVal;
  return table.map((p) => [lo + (flip ? 1 - p[0] : p[0]) * (hi - lo), p[1]]);
}

class ColorRampVisualizer extends __RampBase {
  constructor(ramps, minVal, maxVal) {
    super(ramps, minVal, maxVal, Math.floor);
    this.ramps = ramps;
  }

  inverse() {
    const values = this.pairs.map((p) => p[0]);
    const colors = this.pairs.map((p) => p[1].map((c) => c / 255)).reverse();
    return new ColorRampVisualizer(values.map((v, i) => [v, colors[i]]));
  }

  static createRedTemperature(minVal, maxVal) {
    return new ColorRampVisualizer(__preset(redTemperature, minVal, maxVal, true));
  }

  static createWhiteGreen(minVal, maxVal) {
    return new ColorRampVisualizer(__preset(greenWhite, minVal, maxVal, true));
  }

  static createBlueRed(minVal, maxVal) {
    return new ColorRampVisualizer(__preset(blueRed, minVal, maxVal, true));
  }

  static createOceanColor(minVal, maxVal) {
    return new ColorRampVisualizer(__preset(oceanColor, minVal, maxVal, false));
  }
}

class ColorGradientVisualizer extends __RampBase {
  constructor(valColPairs, minVal, maxVal) {
    super(__preset(valColPairs, 0, 1, false), undefined, undefined, Math.round);
    const lo = minVal === undefined ? 0 : minVal;
    const hi = maxVal === undefined ? 1 : maxVal;
    // Positions are relative to [minVal, maxVal] only when the caller gave an interval.
    if (minVal !== undefined || maxVal !== undefined) {
      for (const p of this.pairs) p[0] = lo + p[0] * (hi - lo);
    }
  }

  static createRedTemperature(minVal, maxVal) {
    return new ColorGradientVisualizer(__preset(redTemperature, 0, 1, true), minVal, maxVal);
  }

  static createWhiteGreen(minVal, maxVal) {
    return new ColorGradientVisualizer(__preset(greenWhite, 0, 1, true), minVal, maxVal);
  }

  static createBlueRed(minVal, maxVal) {
    return new ColorGradientVisualizer(__preset(blueRed, 0, 1, true), minVal, maxVal);
  }
}

// Discrete: the colour of the last threshold <= value; below the first threshold, the first colour.
class ColorMapVisualizer {
  constructor(valColPairs) {
    this.pairs = valColPairs.map((p) => [p[0], __rgb255(p[1])]).sort((a, b) => a[0] - b[0]);
  }

  process(value) {
    let color = this.pairs[0][1];
    for (const p of this.pairs) {
      if (value >= p[0]) color = p[1];
      else break;
    }
    return [color[0] / 255, color[1] / 255, color[2] / 255];
  }

  static createDefaultColorMap() {
    return new ColorMapVisualizer([
      [-1.0, 0x000000], [-0.2, 0xff0000], [-0.1, 0x9a0000], [0.0, 0x660000], [0.1, 0xffff33],
      [0.2, 0xcccc33], [0.3, 0x666600], [0.4, 0x33ffff], [0.5, 0x33cccc], [0.6, 0x006666],
      [0.7, 0x33ff33], [0.8, 0x33cc33], [0.9, 0x006600],
    ]);
  }
}

// Linear up to 0.92 of [minValue, maxValue], then compressed so that 2*max - min maps to 1.
// gain/offset/gamma are undocumented; they are applied after the compression as
// (gain * x + offset) ** gamma, which is the identity at their defaults.
class HighlightCompressVisualizer {
  constructor(minValue, maxValue, gain, offset, gamma) {
    this.minValue = minValue === undefined ? 0.0 : minValue;
    this.maxValue = maxValue === undefined ? 1.0 : maxValue;
    this.gain = gain === undefined ? 1.0 : gain;
    this.offset = offset === undefined ? 0.0 : offset;
    this.gamma = gamma === undefined ? 1.0 : gamma;
  }

  process(value) {
    const x = (value - this.minValue) / (this.maxValue - this.minValue);
    let y;
    if (!(x > 0)) y = 0;
    else if (x <= 0.92) y = x;
    else y = Math.min(1, 0.92 + ((x - 0.92) * 0.08) / 1.08);
    y = this.gain * y + this.offset;
    return this.gamma === 1 ? y : Math.pow(Math.max(y, 0), this.gamma);
  }

  processList(values) {
    return values.map((v, i) => this.process(v, i));
  }
}
const HighlightCompressVisualizerSingle = HighlightCompressVisualizer;

// ---- what server/evalscript/js_vector.py needs to vectorise a script -----------------------
// The helpers and built-ins it reimplements with numpy, captured before the user's script runs:
// a script that replaces one of them (or Math.max, or Array.prototype.includes) is left to V8.
// Built-ins are captured too, so a script that replaces JSON.stringify or Array.isArray cannot
// change what is reported about it.
const __eotiler_eval = eval;
const __eotiler_toString = Function.prototype.toString;
const __eotiler_json = Object.freeze({ parse: JSON.parse, stringify: JSON.stringify });
const __eotiler_isArray = Array.isArray;
const __eotiler_protoOf = Object.getPrototypeOf;
const __eotiler_keys = Object.keys;
const __eotiler_hasOwn = Object.prototype.hasOwnProperty;
const __eotiler_isFinite = Number.isFinite;
const __eotiler_builtins = Object.freeze({
  index: index, inverse: inverse, valueMap: valueMap, valueInterpolate: valueInterpolate, colorBlend: colorBlend,
  "Math.min": Math.min, "Math.max": Math.max, "Math.abs": Math.abs, "Math.sqrt": Math.sqrt,
  "Math.floor": Math.floor, "Math.ceil": Math.ceil, "Math.trunc": Math.trunc, "Math.round": Math.round,
  "Math.sign": Math.sign, "Math.pow": Math.pow, "Array.prototype.includes": Array.prototype.includes,
  "Array.prototype.map": Array.prototype.map, "Array.prototype.concat": Array.prototype.concat,
});
const __eotiler_MAX_CONSTANT = 65536;
// Visualizer classes whose process() the vectoriser reimplements: prototypes and methods as the
// runtime defined them, so an object of a class the script patched is not described.
const __eotiler_highlight = Object.freeze([HighlightCompressVisualizer.prototype,
  HighlightCompressVisualizer.prototype.process, HighlightCompressVisualizer.prototype.processList]);
const __eotiler_ramps = Object.freeze([ColorRampVisualizer.prototype, ColorGradientVisualizer.prototype,
  __RampBase.prototype.process, Math.floor, Math.round]);
const __eotiler_colorMap = Object.freeze([ColorMapVisualizer.prototype, ColorMapVisualizer.prototype.process]);

// A visualizer object as JSON (its class and settings), or undefined.
function __eotiler_visualizer(v) {
  const proto = __eotiler_protoOf(v);
  const own = (key) => __eotiler_hasOwn.call(v, key);
  if (own("process") || own("processList")) return undefined;
  const numbers = (keys) => keys.every((key) => typeof v[key] === "number");
  if (proto === __eotiler_highlight[0] && proto.process === __eotiler_highlight[1] &&
      proto.processList === __eotiler_highlight[2] && numbers(["minValue", "maxValue", "gain", "offset", "gamma"])) {
    return { kind: "visualizer", type: "highlight", minValue: v.minValue, maxValue: v.maxValue, gain: v.gain,
      offset: v.offset, gamma: v.gamma };
  }
  let type;
  if ((proto === __eotiler_ramps[0] || proto === __eotiler_ramps[1]) && !__eotiler_hasOwn.call(proto, "process") &&
      __eotiler_protoOf(proto).process === __eotiler_ramps[2] &&
      (v.round === __eotiler_ramps[3] || v.round === __eotiler_ramps[4])) {
    type = v.round === __eotiler_ramps[3] ? "ramp-floor" : "ramp-round";
  } else if (proto === __eotiler_colorMap[0] && proto.process === __eotiler_colorMap[1]) {
    type = "colormap";
  } else {
    return undefined;
  }
  const pairs = __eotiler_constant(v.pairs, 0, { n: 0 }, 3); // [[position, [r, g, b]], ...]
  if (pairs === undefined) return undefined;
  return { kind: "visualizer", type: type, pairs: pairs };
}

// A constant as JSON: numbers (non-finite ones as strings), arrays of them up to maxDepth (2)
// levels deep.
function __eotiler_constant(v, depth, count, maxDepth = 2) {
  if (typeof v === "number") {
    count.n++;
    return __eotiler_isFinite(v) ? v : "" + v;
  }
  if (depth < maxDepth && __eotiler_isArray(v) && __eotiler_protoOf(v) === Array.prototype &&
      !__eotiler_hasOwn.call(v, "includes") && !__eotiler_hasOwn.call(v, "map") && !__eotiler_hasOwn.call(v, "concat") &&
      __eotiler_keys(v).length === v.length) {
    const out = [];
    for (let i = 0; i < v.length; i++) {
      const item = __eotiler_constant(v[i], depth + 1, count, maxDepth);
      if (item === undefined || count.n > __eotiler_MAX_CONSTANT) return undefined;
      out[out.length] = item;
    }
    return out;
  }
  return undefined;
}

// What each global name is now (after the script's top level and setup() ran).
function __eotiler_globals(namesJson) {
  const report = { __intact: [] };
  for (const key of __eotiler_keys(__eotiler_builtins)) {
    const dot = key.lastIndexOf(".");
    let current;
    try {
      current = dot < 0 ? __eotiler_eval(key) : __eotiler_eval(key.slice(0, dot))[key.slice(dot + 1)];
    } catch (e) {
      continue;
    }
    if (current === __eotiler_builtins[key]) report.__intact.push(key);
  }
  for (const name of __eotiler_json.parse(namesJson)) {
    let v;
    try {
      v = __eotiler_eval(name);
    } catch (e) {
      report[name] = { kind: "missing" };
      continue;
    }
    if (v === Math) report[name] = { kind: "math" };
    else if (typeof v === "boolean") report[name] = { kind: "boolean", value: v };
    else if (typeof v === "function") {
      report[name] = v === __eotiler_builtins[name] ? { kind: "builtin" } : { kind: "function", text: __eotiler_toString.call(v) };
    } else if (v === undefined) report[name] = { kind: "undefined" };
    else {
      const visualizer = v !== null && typeof v === "object" ? __eotiler_visualizer(v) : undefined;
      const value = visualizer === undefined ? __eotiler_constant(v, 0, { n: 0 }) : undefined;
      if (visualizer !== undefined) report[name] = visualizer;
      else report[name] = value === undefined ? { kind: "other" } : { kind: "constant", value: value };
    }
  }
  return __eotiler_json.stringify(report);
}

// ---- driver: called by server/evalscript/js_worker.py ----------------------------------------
// Band values travel through two Float64Arrays whose ArrayBuffers Python writes and reads
// directly (no JSON): __in is [scene][band][pixel], __out is [band][pixel].
var __in = new Float64Array(0);
var __out = new Float64Array(0);
var __loop = null;
var __loopKey = "";

function __eotiler_buffers(inLength, outLength) {
  if (__in.length !== inLength) __in = new Float64Array(inLength);
  if (__out.length !== outLength) __out = new Float64Array(outLength);
  return 0;
}

function __eotiler_setup() {
  const info = {
    hasSetup: typeof setup === "function",
    hasEvaluatePixel: typeof evaluatePixel === "function",
    hasPreProcessScenes: typeof preProcessScenes === "function",
    hasUpdateOutputMetadata: typeof updateOutputMetadata === "function",
  };
  if (info.hasSetup) info.setup = setup();
  return JSON.stringify(info);
}

// Multi-output returns pick the requested output; a bare number is a 1-band output.
function __eotiler_store(result, pixel, n, bands, outputId) {
  if (result !== null && typeof result === "object" && !Array.isArray(result) && !ArrayBuffer.isView(result)) {
    result = result[outputId];
    if (result === undefined) throw new Error("evaluatePixel returned no '" + outputId + "' output");
  }
  if (result === undefined || result === null) {
    for (let b = 0; b < bands; b++) __out[b * n + pixel] = 0;
    return;
  }
  if (typeof result === "number" || typeof result === "boolean") {
    if (bands !== 1) throw new Error("evaluatePixel returned a number; the output declares " + bands + " bands");
    __out[pixel] = +result;
    return;
  }
  if (result.length !== bands) {
    throw new Error("evaluatePixel returned " + result.length + " values; the output declares " + bands + " bands");
  }
  for (let b = 0; b < bands; b++) {
    const v = result[b];
    if (typeof v !== "number" && typeof v !== "boolean") {
      throw new Error("evaluatePixel returned a non-numeric value at position " + b);
    }
    __out[b * n + pixel] = +v;
  }
}

// The per-pixel loop is generated once per (bands, scenes) layout so sample objects keep one
// shape and V8 can optimise the property stores. Band names are validated identifiers.
function __eotiler_loop(names, scenes, temporal) {
  const key = names.join(",") + "|" + scenes + "|" + temporal;
  if (__loopKey === key) return __loop;
  const lines = [];
  const fields = names.map((name) => name + ": 0").join(", ");
  if (!temporal) {
    lines.push("const s = {" + fields + "};");
    lines.push("for (let i = 0; i < n; i++) {");
    names.forEach((name, b) => lines.push("  s." + name + " = __in[" + b + " * n + i];"));
    lines.push("  __eotiler_store(evaluatePixel(s, scenes, inputMetadata, customData, outputMetadata), i, n, bands, outputId);");
    lines.push("}");
  } else {
    lines.push("const list = [];");
    lines.push("for (let k = 0; k < " + scenes + "; k++) list.push({" + fields + "});");
    lines.push("const stride = " + names.length + " * n;");
    lines.push("for (let i = 0; i < n; i++) {");
    lines.push("  for (let k = 0; k < " + scenes + "; k++) {");
    lines.push("    const s = list[k];");
    names.forEach((name, b) => lines.push("    s." + name + " = __in[k * stride + " + b + " * n + i];"));
    lines.push("  }");
    lines.push("  __eotiler_store(evaluatePixel(list, scenes, inputMetadata, customData, outputMetadata), i, n, bands, outputId);");
    lines.push("}");
  }
  __loop = new Function("n", "bands", "outputId", "scenes", "inputMetadata", "customData", "outputMetadata",
    lines.join("\n"));
  __loopKey = key;
  return __loop;
}

// The scenes argument as Sentinel Hub documents it: scenes.tiles[i] {date, cloudCoverage, dataPath,
// shId} for TILE, scenes.orbits[i] {dateFrom, dateTo, tiles} for ORBIT (one entry per UTC day), every
// date an ISO string "YYYY-MM-DDTHH:MM:SSZ" (scripts call .split("T") on them). The object is also
// an array in the deprecated first V3 form that published scripts still read: scenes[i].date, a
// Date (the acquisition time; an orbit's first tile), with the tile's other fields for TILE.
function __eotiler_scenes(meta) {
  const tiles = meta.scenes.map((s) => ({
    date: s.date, cloudCoverage: s.cloudCoverage, dataPath: s.dataPath, shId: s.shId,
  }));
  if (meta.mosaicking === "TILE") {
    const scenes = tiles.map((t) => ({
      date: new Date(t.date), cloudCoverage: t.cloudCoverage, dataPath: t.dataPath, shId: t.shId,
    }));
    scenes.tiles = tiles;
    return scenes;
  }
  const orbits = meta.orbits.map((o) => ({ dateFrom: o.dateFrom, dateTo: o.dateTo, tiles: o.tiles.map((t) => tiles[t]) }));
  const scenes = orbits.map((o) => ({ date: new Date(o.tiles.length > 0 ? o.tiles[0].date : o.dateFrom) }));
  scenes.orbits = orbits;
  return scenes;
}

// inputMetadata as Sentinel Hub documents it: the service's version, and the factor its DN
// values are multiplied by to give reflectance.
function __eotiler_input_metadata() {
  return { serviceVersion: "eotiler-1", normalizationFactor: 0.0001 };
}

function __eotiler_evaluate(metaJson) {
  const meta = JSON.parse(metaJson);
  const temporal = meta.mosaicking !== "SIMPLE";
  const scenes = temporal ? __eotiler_scenes(meta) : {};
  const loop = __eotiler_loop(meta.names, meta.samples, temporal);
  loop(meta.n, meta.bands, meta.outputId, scenes, __eotiler_input_metadata(), {}, { userData: {} });
  return 0;
}

// updateOutputMetadata runs once per image, after every pixel is evaluated: scenes are the
// scenes that drew the image (scenes.tiles, or scenes.orbits for ORBIT; the SIMPLE mosaic
// gets the tiles form), and what it sets as outputMetadata.userData goes back as JSON
// (Sentinel Hub's userdata.json).
function __eotiler_output_metadata(metaJson) {
  const meta = JSON.parse(metaJson);
  const outputMetadata = { userData: {} };
  updateOutputMetadata(__eotiler_scenes(meta), __eotiler_input_metadata(), outputMetadata);
  const text = JSON.stringify(outputMetadata.userData);
  return text === undefined ? "{}" : text;
}

// preProcessScenes sees the catalogue's scenes before anything is read; the indices of the
// scenes it keeps go back to Python (each entry carries its position as __index).
// collections = {scenes: {orbits | tiles}, from, to}: entries as in evaluatePixel (ISO strings),
// from/to as Dates (the request's time range).
function __eotiler_preprocess(metaJson) {
  const meta = JSON.parse(metaJson);
  const all = __eotiler_scenes(meta);
  const scenes = meta.mosaicking === "TILE" ? { tiles: all.tiles } : { orbits: all.orbits };
  const list = meta.mosaicking === "TILE" ? scenes.tiles : scenes.orbits;
  list.forEach((entry, i) => { entry.__index = i; });
  const collections = { scenes: scenes, from: new Date(meta.from), to: new Date(meta.to) };
  const kept = preProcessScenes(collections);
  const out = kept && kept.scenes ? (meta.mosaicking === "TILE" ? kept.scenes.tiles : kept.scenes.orbits) : list;
  if (!Array.isArray(out)) throw new Error("preProcessScenes must return the collections object");
  return JSON.stringify(out.map((entry) => entry.__index).filter((i) => typeof i === "number"));
}

// V1 scripts declare no outputs: their band count is the length of what one sample returns.
function __eotiler_probe(namesJson) {
  const s = {};
  for (const name of JSON.parse(namesJson)) s[name] = name === "dataMask" ? 1 : 0.1;
  const r = evaluatePixel(s);
  return typeof r === "number" || typeof r === "boolean" ? 1 : (r && typeof r.length === "number" ? r.length : -1);
}
