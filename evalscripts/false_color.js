//VERSION=3
// False colour infrared: B08, B04, B03 with a 2.5x gain. JavaScript twin of false_color.py.
const GAIN = 2.5;

function setup() {
  return {
    input: [{ bands: ["B03", "B04", "B08", "dataMask"] }],
    output: { bands: 4 },
  };
}

function evaluatePixel(samples) {
  return [GAIN * samples.B08, GAIN * samples.B04, GAIN * samples.B03, samples.dataMask];
}
