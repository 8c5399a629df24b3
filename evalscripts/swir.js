//VERSION=3
// SWIR composite: B12, B8A, B04 with a 2.5x gain. JavaScript twin of swir.py.
const GAIN = 2.5;

function setup() {
  return {
    input: [{ bands: ["B04", "B8A", "B12", "dataMask"] }],
    output: { bands: 4 },
  };
}

function evaluatePixel(samples) {
  return [GAIN * samples.B12, GAIN * samples.B8A, GAIN * samples.B04, samples.dataMask];
}
