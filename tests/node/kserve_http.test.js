// Node.js client of the KServe v2 HTTP/REST protocol (the built-in fetch)
// against a real attn_server. Driven by tests/integration/run_node_test.py
// with the same case file as attend.test.js: the expected output is the
// attn.v1 answer of the Python client for the same query. JSON tensors and
// the binary tensor data extension are both checked, plus the 400/404 JSON
// errors.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const test = require('node:test');

const base = process.env.ATTN_HTTP_BASE;
const caseFile = process.env.ATTN_NODE_CASE;
assert.ok(base && caseFile, 'ATTN_HTTP_BASE and ATTN_NODE_CASE must be set');
const testCase = JSON.parse(fs.readFileSync(caseFile, 'utf8'));

function floats(b64) {
  const bytes = Buffer.from(b64, 'base64');
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
}

const query = floats(testCase.query.data_b64);
const expected = floats(testCase.expected.data_b64);
const inferUrl = `${base}/v2/models/${testCase.model}/infer`;

test('health and model metadata', async () => {
  const live = await fetch(`${base}/v2/health/live`);
  assert.equal(live.status, 200);
  assert.deepEqual(await live.json(), {live: true});
  const meta = await fetch(`${base}/v2/models/${testCase.model}`);
  assert.equal(meta.status, 200);
  const body = await meta.json();
  assert.equal(body.name, testCase.model);
  assert.equal(body.inputs[0].name, 'query');
});

test('JSON infer equals the attn.v1 answer', async () => {
  const r = await fetch(inferUrl, {
    method: 'POST',
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({inputs: [{name: 'query', datatype: 'FP32',
                                    shape: testCase.query.shape,
                                    data: Array.from(query)}]}),
  });
  assert.equal(r.status, 200);
  const body = await r.json();
  assert.deepEqual(body.outputs[0].shape, testCase.expected.shape);
  assert.deepEqual(Float32Array.from(body.outputs[0].data), expected);
});

test('binary infer equals the attn.v1 answer', async () => {
  const header = Buffer.from(JSON.stringify({
    inputs: [{name: 'query', datatype: 'FP32', shape: testCase.query.shape,
              parameters: {binary_data_size: query.byteLength}}],
    outputs: [{name: 'output', parameters: {binary_data: true}}],
  }));
  const r = await fetch(inferUrl, {
    method: 'POST',
    headers: {'Content-Type': 'application/octet-stream',
              'Inference-Header-Content-Length': String(header.length)},
    body: Buffer.concat([header, Buffer.from(query.buffer)]),
  });
  assert.equal(r.status, 200);
  const n = Number(r.headers.get('inference-header-content-length'));
  const bytes = Buffer.from(await r.arrayBuffer());
  const doc = JSON.parse(bytes.subarray(0, n).toString());
  assert.equal(doc.outputs[0].parameters.binary_data_size, bytes.length - n);
  const out = new Float32Array(bytes.buffer.slice(bytes.byteOffset + n));
  assert.deepEqual(out, expected);
});

test('errors are JSON with their HTTP status', async () => {
  const missing = await fetch(`${base}/v2/models/nope/infer`, {
    method: 'POST',
    body: JSON.stringify({inputs: [{name: 'query', datatype: 'FP32',
                                    shape: testCase.query.shape,
                                    data: Array.from(query)}]})});
  assert.equal(missing.status, 404);
  assert.match((await missing.json()).error, /'nope'/);
  const bad = await fetch(inferUrl, {
    method: 'POST',
    body: JSON.stringify({inputs: [{name: 'query', datatype: 'FP32',
                                    shape: [1, 2], data: [1, 2]}]})});
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).error, /d_model 256/);
});
