// Small ONNX models built in TypeScript with onnx-proto (the refusal tests need graphs no
// exporter writes on purpose). Float tensors only; every initializer is float32.
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

export interface NodeSpec {
  op: string;
  inputs: string[];
  outputs: string[];
  name?: string;
  domain?: string;
  attrs?: Record<string, number | number[] | string>;
}

export function tensor(name: string, dims: number[], values: number[]) {
  return { name, dims, dataType: onnx.TensorProto.DataType.FLOAT, floatData: values };
}

function attr(name: string, v: number | number[] | string) {
  const A = onnx.AttributeProto.AttributeType;
  if (typeof v === 'string') return { name, type: A.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return v.every(Number.isInteger) ? { name, type: A.INTS, ints: v } : { name, type: A.FLOATS, floats: v };
  return Number.isInteger(v) ? { name, type: A.INT, i: v } : { name, type: A.FLOAT, f: v };
}

const valueInfo = (name: string, shape: (number | string)[]) => ({
  name,
  type: {
    tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } },
  },
});

export function buildModel(o: {
  nodes: NodeSpec[];
  inputs: [string, (number | string)[]][];
  outputs: [string, (number | string)[]][];
  initializers?: ReturnType<typeof tensor>[];
  opset?: number;
}): Uint8Array {
  const model = onnx.ModelProto.create({
    irVersion: 8,
    opsetImport: [
      { domain: '', version: o.opset ?? 13 },
      { domain: 'ai.onnx.ml', version: 3 },
    ],
    producerName: 'sealed tests',
    graph: {
      name: 'g',
      node: o.nodes.map((n, i) => ({
        opType: n.op,
        input: n.inputs,
        output: n.outputs,
        name: n.name ?? `n${i}_${n.op}`,
        domain: n.domain ?? '',
        attribute: Object.entries(n.attrs ?? {}).map(([k, v]) => attr(k, v)),
      })),
      input: o.inputs.map(([n, s]) => valueInfo(n, s)),
      output: o.outputs.map(([n, s]) => valueInfo(n, s)),
      initializer: o.initializers ?? [],
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

/** x [N, n] -> Gemm(n -> m) -> ... : a dense layer's initializers, with deterministic weights. */
export function gemmWeights(prefix: string, n: number, m: number, seed = 1) {
  let s = seed;
  const r = () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s / 2 ** 31 - 0.5;
  };
  return [
    tensor(
      `${prefix}_W`,
      [m, n],
      Array.from({ length: m * n }, () => r() * 0.5),
    ),
    tensor(
      `${prefix}_b`,
      [m],
      Array.from({ length: m }, () => r() * 0.1),
    ),
  ];
}

/** A Gemm node y = x W^T + b reading the initializers gemmWeights(name, ...) makes. */
export const gemm = (name: string, x: string, y: string): NodeSpec => ({
  op: 'Gemm',
  inputs: [x, `${name}_W`, `${name}_b`],
  outputs: [y],
  name,
  attrs: { transB: 1 },
});
