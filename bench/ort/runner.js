// ONNX Runtime (CPU) for bench/cpu_compare.py: one session at a time, driven by JSON lines on
// stdin, one JSON answer per line on stdout, so that the benchmark can interleave ONNX Runtime's
// timing rounds with eager PyTorch's and kiln's in one run.
//   {"cmd": "load", "model": "m.onnx", "threads": 2}
//       -> {"load_ms": ..., "inputs": [...], "outputs": [...]}
//   {"cmd": "run", "inputs": [{"path": "x.bin", "dims": [1, 3, 224, 224]}], "iters": 20, "warmup": 3, "out": "y.bin"}
//       -> {"times_ms": [...]}   (float32 raw little-endian in and out; output 0 written to "out")
"use strict";
const fs = require("fs");
const readline = require("readline");
const ort = require("onnxruntime-node");

let session = null;

async function handle(req) {
  if (req.cmd === "load") {
    const t0 = process.hrtime.bigint();
    session = await ort.InferenceSession.create(req.model, {
      executionProviders: ["cpu"],
      graphOptimizationLevel: "all",
      executionMode: "sequential",
      intraOpNumThreads: req.threads,
      interOpNumThreads: 1,
    });
    return { load_ms: Number(process.hrtime.bigint() - t0) / 1e6, inputs: session.inputNames, outputs: session.outputNames };
  }
  if (req.cmd === "run") {
    if (!session) throw new Error("run before load");
    const feeds = {};
    req.inputs.forEach((spec, i) => {
      const buf = fs.readFileSync(spec.path);
      const data = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
      feeds[session.inputNames[i]] = new ort.Tensor("float32", data, spec.dims);
    });
    let result = null;
    for (let i = 0; i < req.warmup; ++i) result = await session.run(feeds);
    const times = [];
    for (let i = 0; i < req.iters; ++i) {
      const t0 = process.hrtime.bigint();
      result = await session.run(feeds);
      times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    if (req.out) {
      const y = result[session.outputNames[0]];
      fs.writeFileSync(req.out, Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength));
    }
    return { times_ms: times };
  }
  throw new Error(`unknown command ${req.cmd}`);
}

const lines = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on("line", (line) => {
  queue = queue.then(async () => {
    let answer;
    try {
      answer = await handle(JSON.parse(line));
    } catch (e) {
      answer = { error: String(e && e.message ? e.message : e) };
    }
    process.stdout.write(JSON.stringify(answer) + "\n");
  });
});
