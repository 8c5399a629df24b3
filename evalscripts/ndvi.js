//VERSION=3
// NDVI, coloured with a brown-to-green ramp. JavaScript twin of ndvi.py.
const STOPS = [-0.5, 0.0, 0.2, 0.4, 0.6, 1.0];
const COLORS = [0x0c0c0c, 0xeaeaea, 0x91bf51, 0x4f892d, 0x0f540a, 0x004400].map((c) => normalizeRGB(int2rgb(c)));

function setup() {
  return {
    input: [{ bands: ["B04", "B08", "dataMask"] }],
    output: { bands: 4 },
  };
}

function evaluatePixel(samples) {
  const value = index(samples.B08, samples.B04);
  const rgb = colorBlend(value, STOPS, COLORS);
  return [rgb[0], rgb[1], rgb[2], samples.dataMask];
}
