//VERSION=3
// Scene classification (SCL) with the usual Sentinel-2 L2A palette; class 0 is transparent.
// JavaScript twin of scl.py.
const PALETTE = [
  0x000000, // 0 no data
  0xff0000, // 1 saturated or defective
  0x2f2f2f, // 2 dark area pixels
  0x643200, // 3 cloud shadows
  0x00a000, // 4 vegetation
  0xffe65a, // 5 not vegetated
  0x0000ff, // 6 water
  0x808080, // 7 unclassified
  0xc0c0c0, // 8 cloud, medium probability
  0xffffff, // 9 cloud, high probability
  0x64c8ff, // 10 thin cirrus
  0xff96ff, // 11 snow or ice
].map((c) => normalizeRGB(int2rgb(c)));

function setup() {
  return {
    input: [{ bands: ["SCL", "dataMask"], units: "DN" }],
    output: { bands: 4 },
  };
}

function evaluatePixel(samples) {
  const cls = Math.trunc(Math.min(Math.max(samples.SCL, 0), 11));
  const rgb = PALETTE[cls];
  return [rgb[0], rgb[1], rgb[2], cls > 0 ? samples.dataMask : 0];
}
