"""The model: graph index, linear layers and their weight layout, activations and channel maps,
model I/O, opset handling and the weight store. Knows ONNX; knows nothing of quantization."""
