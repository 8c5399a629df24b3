//VERSION=3
// True colour with compressed highlights: linear up to 0.4 reflectance, so land keeps its
// contrast while bright clouds and snow still show detail (Sentinel Hub's
// HighlightCompressVisualizer, as EO Browser's default true-colour layers use it).
const visualizer = new HighlightCompressVisualizer(0.0, 0.4);

function setup() {
  return {
    input: ["B02", "B03", "B04", "dataMask"],
    output: { bands: 4 },
  };
}

function evaluatePixel(samples) {
  const rgb = visualizer.processList([samples.B04, samples.B03, samples.B02]);
  return [rgb[0], rgb[1], rgb[2], samples.dataMask];
}
