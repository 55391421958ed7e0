// Node.js gRPC client (@grpc/grpc-js + @grpc/proto-loader) against a real
// attn_server. Driven by tests/integration/run_node_test.py, which starts
// the server and writes the case file:
//   ATTN_TARGET     "127.0.0.1:PORT"
//   ATTN_PROTO_DIR  directory holding attn/v1/attention.proto
//   ATTN_NODE_CASE  JSON {model, query: {shape, data_b64}, expected: {shape,
//                   data_b64}} where expected is the Python client's output
//                   for the same query (float32 little-endian bytes).
'use strict';

const assert = require('node:assert/strict');
const path = require('node:path');
const fs = require('node:fs');
const test = require('node:test');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const target = process.env.ATTN_TARGET;
const protoDir = process.env.ATTN_PROTO_DIR;
const caseFile = process.env.ATTN_NODE_CASE;
assert.ok(target && protoDir && caseFile,
          'ATTN_TARGET, ATTN_PROTO_DIR and ATTN_NODE_CASE must be set');

const definition = protoLoader.loadSync(
    path.join(protoDir, 'attn/v1/attention.proto'),
    {keepCase: true, longs: Number, enums: String, defaults: true,
     includeDirs: [protoDir]});
const attnV1 = grpc.loadPackageDefinition(definition).attn.v1;
const client = new attnV1.AttentionService(target,
                                           grpc.credentials.createInsecure());
const testCase = JSON.parse(fs.readFileSync(caseFile, 'utf8'));
const DEADLINE_MS = 30000;

function deadline() {
  return new Date(Date.now() + DEADLINE_MS);
}

function call(method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, {deadline: deadline()},
                   (err, response) => (err ? reject(err) : resolve(response)));
  });
}

function floats(tensor) {
  assert.equal(tensor.dtype, 'FLOAT32');
  const buf = Buffer.from(tensor.data);
  const out = new Float32Array(buf.length / 4);
  for (let i = 0; i < out.length; ++i) out[i] = buf.readFloatLE(4 * i);
  return out;
}

function queryTensor() {
  return {shape: testCase.query.shape, dtype: 'FLOAT32',
          data: Buffer.from(testCase.query.data_b64, 'base64')};
}

test('Attend matches the Python client', async () => {
  const response = await call('Attend', {
    model: testCase.model, query: queryTensor(), request_id: 'node-1'});
  assert.deepEqual(response.output.shape.map(Number), testCase.expected.shape);
  assert.equal(response.request_id, 'node-1');
  assert.equal(response.model, testCase.model);
  const got = floats(response.output);
  const expected = floats({dtype: 'FLOAT32',
                           data: Buffer.from(testCase.expected.data_b64, 'base64')});
  assert.equal(got.length, expected.length);
  let maxErr = 0;
  for (let i = 0; i < got.length; ++i) {
    assert.ok(Number.isFinite(got[i]), `output[${i}] is not finite`);
    maxErr = Math.max(maxErr, Math.abs(got[i] - expected[i]));
  }
  assert.ok(maxErr <= 1e-5, `max abs error ${maxErr} > 1e-5`);
});

test('Attend returns weights that are softmax rows', async () => {
  const response = await call('Attend', {
    model: testCase.model, query: queryTensor(), return_attention_weights: true});
  const [b, sq, ] = testCase.query.shape;
  const shape = response.attention_weights.shape.map(Number);
  assert.equal(shape.length, 4);
  assert.deepEqual([shape[0], shape[2], shape[3]], [b, sq, sq]);
  const w = floats(response.attention_weights);
  for (let row = 0; row < w.length / sq; ++row) {
    let sum = 0;
    for (let j = 0; j < sq; ++j) sum += w[row * sq + j];
    assert.ok(Math.abs(sum - 1) < 1e-4, `row ${row} sums to ${sum}`);
  }
});

test('unknown model is NOT_FOUND', async () => {
  await assert.rejects(
      call('Attend', {model: 'no_such_model', query: queryTensor()}),
      (err) => {
        assert.equal(err.code, grpc.status.NOT_FOUND);
        assert.ok(err.details.length > 0);
        return true;
      });
});

test('bad byte length is INVALID_ARGUMENT', async () => {
  const q = queryTensor();
  q.data = q.data.subarray(0, q.data.length - 4);
  await assert.rejects(call('Attend', {model: testCase.model, query: q}),
                       (err) => err.code === grpc.status.INVALID_ARGUMENT);
});

test('ListModels lists the model', async () => {
  const response = await call('ListModels', {});
  const names = response.models.map((m) => m.name);
  assert.ok(names.includes(testCase.model), `models: ${names}`);
});

test.after(() => client.close());
