//VERSION=3
// Moisture index (NDMI), red (dry) to blue (wet). JavaScript twin of moisture_index.py.
const STOPS = [-0.8, -0.24, -0.032, 0.032, 0.24, 0.8];
const COLORS = [0x800000, 0xff0000, 0xffff00, 0x00ffff, 0x0000ff, 0x000080].map((c) => normalizeRGB(int2rgb(c)));

function setup() {
  return {
    input: [{ bands: ["B8A", "B11", "dataMask"] }],
    output: { bands: 4 },
  };
}

function evaluatePixel(samples) {
  const value = index(samples.B8A, samples.B11);
  const rgb = colorBlend(value, STOPS, COLORS);
  return [rgb[0], rgb[1], rgb[2], samples.dataMask];
}
