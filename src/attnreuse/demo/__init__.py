"""`attnreuse demo`: the main job. Train every attention plan on the built-in digits data, measure
accuracy, latency and memory (eager and ONNX Runtime), sweep the operators, write a report."""
