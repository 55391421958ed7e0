// Node.js client of the KServe v2 gRPC protocol (@grpc/proto-loader on our
// proto/inference/grpc_service.proto) against a real attn_server. Driven by
// tests/integration/run_node_test.py with the same case file as
// attend.test.js: the expected output is the attn.v1 answer of the Python
// client for the same query.
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
    path.join(protoDir, 'inference/grpc_service.proto'),
    {keepCase: true, longs: Number, enums: String, defaults: true,
     includeDirs: [protoDir]});
const inference = grpc.loadPackageDefinition(definition).inference;
const client = new inference.GRPCInferenceService(
    target, grpc.credentials.createInsecure());
const testCase = JSON.parse(fs.readFileSync(caseFile, 'utf8'));

function call(method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, {deadline: new Date(Date.now() + 30000)},
                   (err, response) => (err ? reject(err) : resolve(response)));
  });
}

function inferRequest(model) {
  return {
    model_name: model, id: 'node-v2',
    inputs: [{name: 'query', datatype: 'FP32', shape: testCase.query.shape}],
    raw_input_contents: [Buffer.from(testCase.query.data_b64, 'base64')],
  };
}

test('ServerLive, ServerReady, ServerMetadata', async () => {
  assert.equal((await call('ServerLive', {})).live, true);
  assert.equal((await call('ServerReady', {})).ready, true);
  assert.equal((await call('ServerMetadata', {})).name, 'attnserve');
});

test('ModelMetadata declares variable dims as -1', async () => {
  const m = await call('ModelMetadata', {name: testCase.model});
  const query = m.inputs.find((t) => t.name === 'query');
  assert.deepEqual(query.shape, [-1, -1, testCase.query.shape[2]]);
  assert.equal(query.datatype, 'FP32');
});

test('ModelInfer equals the attn.v1 answer', async () => {
  const r = await call('ModelInfer', inferRequest(testCase.model));
  assert.equal(r.id, 'node-v2');
  assert.equal(r.outputs.length, 1);
  assert.equal(r.outputs[0].name, 'output');
  assert.equal(r.outputs[0].datatype, 'FP32');
  assert.deepEqual(r.outputs[0].shape, testCase.expected.shape);
  assert.ok(Buffer.from(r.raw_output_contents[0])
                .equals(Buffer.from(testCase.expected.data_b64, 'base64')),
            'output bytes differ from the attn.v1 answer');
});

test('errors carry the KServe status codes', async () => {
  await assert.rejects(call('ModelInfer', inferRequest('no_such_model')),
                       (e) => e.code === grpc.status.NOT_FOUND);
  const noQuery = inferRequest(testCase.model);
  noQuery.inputs[0].name = 'key';
  await assert.rejects(call('ModelInfer', noQuery),
                       (e) => e.code === grpc.status.INVALID_ARGUMENT &&
                           /'query' is missing/.test(e.details));
  const wrongType = inferRequest(testCase.model);
  wrongType.inputs[0].datatype = 'INT64';
  await assert.rejects(call('ModelInfer', wrongType),
                       (e) => e.code === grpc.status.INVALID_ARGUMENT);
});
