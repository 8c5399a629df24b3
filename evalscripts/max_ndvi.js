//VERSION=3
// Greenest pixel over TIME: the highest NDVI of all acquisition days (mosaicking ORBIT), on a
// brown-to-green ramp. Days whose scenes report more than 60 % cloud are dropped before any
// band is read (preProcessScenes).
const ramp = new ColorRampVisualizer([
  [-0.2, 0x0c0c0c],
  [0.0, 0xeaeaea],
  [0.2, 0x91bf51],
  [0.4, 0x4f892d],
  [0.6, 0x0f540a],
  [1.0, 0x004400],
]);

function setup() {
  return {
    input: [{ bands: ["B04", "B08", "dataMask"] }],
    output: { bands: 4 },
    mosaicking: Mosaicking.ORBIT,
  };
}

function preProcessScenes(collections) {
  collections.scenes.orbits = collections.scenes.orbits.filter((orbit) =>
    orbit.tiles.some((tile) => tile.cloudCoverage === null || tile.cloudCoverage <= 60),
  );
  return collections;
}

function evaluatePixel(samples) {
  let best = -Infinity;
  for (const sample of samples) {
    if (sample.dataMask === 1) best = Math.max(best, index(sample.B08, sample.B04));
  }
  if (best === -Infinity) return [0, 0, 0, 0];
  const rgb = ramp.process(best);
  return [rgb[0], rgb[1], rgb[2], 1];
}
