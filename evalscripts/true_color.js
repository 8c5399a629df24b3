//VERSION=3
// True colour: B04, B03, B02 reflectance with a 2.5x gain. JavaScript twin of true_color.py.
const GAIN = 2.5;

function setup() {
  return {
    input: [{ bands: ["B02", "B03", "B04", "dataMask"] }],
    output: { bands: 4 },
  };
}

function evaluatePixel(samples) {
  return [GAIN * samples.B04, GAIN * samples.B03, GAIN * samples.B02, samples.dataMask];
}
