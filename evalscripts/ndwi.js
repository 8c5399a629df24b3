//VERSION=3
// NDWI (McFeeters): open water is positive, shown blue. JavaScript twin of ndwi.py.
const STOPS = [-0.8, 0.0, 0.8];
const COLORS = [0x008000, 0xffffff, 0x0000cc].map((c) => normalizeRGB(int2rgb(c)));

function setup() {
  return {
    input: [{ bands: ["B03", "B08", "dataMask"] }],
    output: { bands: 4 },
  };
}

function evaluatePixel(samples) {
  const value = index(samples.B03, samples.B08);
  const rgb = colorBlend(value, STOPS, COLORS);
  return [rgb[0], rgb[1], rgb[2], samples.dataMask];
}
