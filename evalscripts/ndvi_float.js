//VERSION=3
// NDVI as raw float32 values, for analysis downloads (GeoTIFF). JavaScript twin of ndvi_float.py.
function setup() {
  return {
    input: [{ bands: ["B04", "B08", "dataMask"] }],
    output: { bands: 1, sampleType: "FLOAT32" },
  };
}

function evaluatePixel(samples) {
  return [index(samples.B08, samples.B04)];
}
