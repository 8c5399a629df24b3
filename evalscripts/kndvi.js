//VERSION=3
// kNDVI = tanh(NDVI^2), coloured white to dark green. JavaScript twin of kndvi.py.
const STOPS = [0.0, 0.2, 0.4, 0.6, 0.8];
const COLORS = [0xf7fcf5, 0xc7e9c0, 0x74c476, 0x238b45, 0x00441b].map((c) => normalizeRGB(int2rgb(c)));

function setup() {
  return {
    input: [{ bands: ["B04", "B08", "dataMask"] }],
    output: { bands: 4 },
  };
}

function evaluatePixel(samples) {
  const value = Math.tanh(index(samples.B08, samples.B04) ** 2);
  const rgb = colorBlend(value, STOPS, COLORS);
  return [rgb[0], rgb[1], rgb[2], samples.dataMask];
}
