// An ONNX model file -> a plain graph: nodes with decoded attributes, constants (initializers
// and Constant nodes) as Float64Arrays. Decoding is onnx-proto's (protobufjs code generated from
// onnx.proto); this file only turns its messages into the form the lowering reads.
import onnxProto from 'onnx-proto';
import { SealedError } from '../../errors.ts';

const { onnx } = onnxProto;

export interface Tensor {
  dims: number[];
  data: Float64Array;
}

export type Attr = number | string | number[] | string[] | Tensor;

export interface OnnxNode {
  name: string;
  op: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  attrs: Record<string, Attr>;
}

export interface OnnxGraph {
  /** The one non-constant input: its name and shape (a symbolic or absent batch dimension as 1). */
  input: { name: string; shape: number[] };
  outputs: string[];
  constants: Map<string, Tensor>;
  nodes: OnnxNode[];
  opsets: Record<string, number>;
}

/** The lowest ai.onnx opset accepted (the operators' semantics below are those of 13 and later). */
export const MIN_OPSET = 13;

const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v as { toString(): string }));

function tensorOf(t: InstanceType<typeof onnx.TensorProto>, where: string): Tensor {
  const dims = (t.dims ?? []).map(num);
  const size = dims.reduce((a, b) => a * b, 1);
  const T = onnx.TensorProto.DataType;
  let data: Float64Array;
  if (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) {
    throw new SealedError(
      'bad-data',
      `${where}: tensor ${t.name} is stored in an external file`,
      'save the model with its weights inside (onnx.save_model(m, path, save_as_external_data=False))',
    );
  }
  const raw = t.rawData && t.rawData.length > 0 ? t.rawData : undefined;
  const view = raw ? new DataView(raw.buffer, raw.byteOffset, raw.byteLength) : undefined;
  switch (t.dataType) {
    case T.FLOAT:
      data = view ? Float64Array.from({ length: size }, (_, i) => view.getFloat32(4 * i, true)) : Float64Array.from(t.floatData ?? []);
      break;
    case T.DOUBLE:
      data = view ? Float64Array.from({ length: size }, (_, i) => view.getFloat64(8 * i, true)) : Float64Array.from(t.doubleData ?? []);
      break;
    case T.INT64:
      data = view ? Float64Array.from({ length: size }, (_, i) => Number(view.getBigInt64(8 * i, true))) : Float64Array.from((t.int64Data ?? []).map(num));
      break;
    case T.INT32:
      data = view ? Float64Array.from({ length: size }, (_, i) => view.getInt32(4 * i, true)) : Float64Array.from(t.int32Data ?? []);
      break;
    default:
      throw new SealedError(
        'bad-data',
        `${where}: tensor ${t.name} has element type ${T[t.dataType ?? 0] ?? t.dataType}`,
        'export the model with float32 weights',
      );
  }
  if (data.length !== size) throw new SealedError('bad-data', `${where}: tensor ${t.name} holds ${data.length} values for dimensions ${dims.join('x')}`);
  return { dims, data };
}

function attrOf(a: InstanceType<typeof onnx.AttributeProto>, where: string): Attr {
  const A = onnx.AttributeProto.AttributeType;
  switch (a.type) {
    case A.FLOAT:
      return a.f ?? 0;
    case A.INT:
      return num(a.i ?? 0);
    case A.STRING:
      return new TextDecoder().decode(a.s ?? new Uint8Array());
    case A.FLOATS:
      return a.floats ?? [];
    case A.INTS:
      return (a.ints ?? []).map(num);
    case A.STRINGS:
      return (a.strings ?? []).map((s) => new TextDecoder().decode(s));
    case A.TENSOR:
      return tensorOf(a.t as InstanceType<typeof onnx.TensorProto>, where);
    default:
      // Graph-valued attributes (If, Loop, Scan bodies) and the rest: the lowering refuses those ops.
      return [];
  }
}

export function parseOnnx(bytes: Uint8Array, source = 'the model'): OnnxGraph {
  let m: InstanceType<typeof onnx.ModelProto>;
  try {
    m = onnx.ModelProto.decode(bytes);
  } catch (e) {
    throw new SealedError(
      'bad-data',
      `${source} is not an ONNX model (${(e as Error).message})`,
      'give the .onnx file torch.onnx.export, tf2onnx or skl2onnx wrote',
    );
  }
  const g = m.graph;
  if (!g || !g.node || g.node.length === 0)
    throw new SealedError('bad-data', `${source} holds no graph`, 'give the .onnx file torch.onnx.export, tf2onnx or skl2onnx wrote');
  const opsets: Record<string, number> = {};
  for (const o of m.opsetImport ?? []) opsets[o.domain ?? ''] = num(o.version ?? 0);
  const core = opsets[''] ?? opsets['ai.onnx'];
  if (core !== undefined && core < MIN_OPSET)
    throw new SealedError(
      'bad-data',
      `${source} uses opset ${core}; sealed reads opset ${MIN_OPSET} and later`,
      `export again with opset_version=${MIN_OPSET} or later`,
    );
  const constants = new Map<string, Tensor>();
  for (const t of g.initializer ?? []) constants.set(t.name ?? '', tensorOf(t as InstanceType<typeof onnx.TensorProto>, source));
  const nodes: OnnxNode[] = [];
  (g.node ?? []).forEach((n, i) => {
    const name = n.name || `node ${i} (${n.opType})`;
    const attrs: Record<string, Attr> = {};
    for (const a of n.attribute ?? []) attrs[a.name ?? ''] = attrOf(a as InstanceType<typeof onnx.AttributeProto>, `${source}, node ${name}`);
    const node: OnnxNode = { name, op: n.opType ?? '', domain: n.domain ?? '', inputs: n.input ?? [], outputs: n.output ?? [], attrs };
    if (node.op === 'Constant' && node.domain === '' && attrs.value && typeof attrs.value === 'object' && 'dims' in attrs.value)
      constants.set(node.outputs[0], attrs.value);
    else nodes.push(node);
  });
  const inputs = (g.input ?? []).filter((v) => !constants.has(v.name ?? ''));
  if (inputs.length !== 1)
    throw new SealedError(
      'bad-data',
      `${source} has ${inputs.length} inputs (${inputs.map((v) => v.name).join(', ')}); sealed compiles models of one input tensor`,
      'export the model with a single input',
    );
  const dims = inputs[0].type?.tensorType?.shape?.dim ?? [];
  const shape = dims.map((d, k) => {
    const v = d.dimValue === undefined || d.dimValue === null ? NaN : num(d.dimValue);
    if (Number.isFinite(v) && v > 0) return v;
    if (k === 0) return 1; // the batch dimension: one record at a time
    throw new SealedError(
      'bad-data',
      `${source}: input ${inputs[0].name} has a symbolic dimension ${k} (${d.dimParam ?? '?'})`,
      'export with fixed sizes for every dimension but the first (the batch)',
    );
  });
  return { input: { name: inputs[0].name ?? '', shape }, outputs: (g.output ?? []).map((o) => o.name ?? ''), constants, nodes, opsets };
}
