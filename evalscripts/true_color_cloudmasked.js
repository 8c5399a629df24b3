//VERSION=3
// True colour with clouds, cirrus and cloud shadows (from SCL) made transparent.
// JavaScript twin of true_color_cloudmasked.py.
const GAIN = 2.5;
const MASKED_CLASSES = [3, 8, 9, 10]; // cloud shadows, cloud medium/high probability, thin cirrus

function setup() {
  return {
    input: [{ bands: ["B02", "B03", "B04", "SCL", "dataMask"] }],
    output: { bands: 4 },
  };
}

function evaluatePixel(samples) {
  const clear = MASKED_CLASSES.includes(samples.SCL) ? 0 : 1;
  return [GAIN * samples.B04, GAIN * samples.B03, GAIN * samples.B02, samples.dataMask * clear];
}
