import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cpu, cuda, Device, DeviceError, DeviceType, device, metal, opencl, runtimeLibraries, Tensor, TvmValueError, vulkan } from '../lib';
import { repoRoot } from './fixtures';

const cudaLib = () => runtimeLibraries().find((l) => l.name === 'libtvm_runtime_cuda.so');

describe('Device', () => {
  it('uses the DLPack device type codes', () => {
    assert.deepEqual(
      [DeviceType.cpu, DeviceType.cuda, DeviceType.cuda_host, DeviceType.opencl, DeviceType.vulkan, DeviceType.metal, DeviceType.rocm],
      [1, 2, 3, 4, 7, 8, 10],
    );
    assert.deepEqual([cuda(3).deviceType, cuda(3).deviceId], [2, 3]);
    assert.deepEqual([vulkan().deviceType, opencl().deviceType, metal().deviceType], [7, 4, 8]);
  });

  it('cpu() exists and is enabled, with kind, index, toString and equality', () => {
    const c = cpu();
    assert.deepEqual([c.deviceType, c.deviceId, c.kind], [1, 0, 'cpu']);
    assert.equal(c.enabled, true);
    assert.equal(c.exists, true);
    assert.equal(String(c), 'cpu(0)');
    assert.ok(c.equals(cpu(0)));
    assert.ok(!c.equals(new Device(DeviceType.cpu, 1)));
    assert.ok(!c.equals(cuda(0)));
    assert.doesNotThrow(() => c.assertAvailable());
  });

  it("cpu() reports the machine's total memory as TVM's CPU device API does (sysinfo, like os.totalmem)", () => {
    assert.equal(cpu().totalMemory, os.totalmem());
  });

  it('tensors report the device they live on', () => {
    const t = Tensor.empty([2, 2]);
    assert.ok(t.device instanceof Device);
    assert.ok(t.device.equals(cpu()));
    assert.equal(t.device.toString(), 'cpu(0)');
  });

  it('device() parses "kind:index" strings and (kind, index) pairs', () => {
    const cases: [Device, number, number, string][] = [
      [device('cpu:0'), 1, 0, 'cpu(0)'],
      [device('cpu'), 1, 0, 'cpu(0)'],
      [device('cuda', 1), 2, 1, 'cuda(1)'],
      [device('cuda:2'), 2, 2, 'cuda(2)'],
      [device('vulkan:3'), 7, 3, 'vulkan(3)'],
      [device('opencl', 0), 4, 0, 'opencl(0)'],
      [device('metal'), 8, 0, 'metal(0)'],
      [device('rocm:1'), 10, 1, 'rocm(1)'],
    ];
    for (const [d, type, id, text] of cases) {
      assert.deepEqual([d.deviceType, d.deviceId, d.toString()], [type, id, text]);
    }
    assert.ok(device('cpu:0').equals(cpu()));
    assert.ok(device('cuda', 1).equals(cuda(1)));
  });

  it('BAD CALL - an unknown device kind is a TvmValueError listing the known ones', () => {
    assert.throws(
      () => device('tpu'),
      (e: Error) => e instanceof TvmValueError && /unknown device 'tpu' \(known: cpu, cuda, cuda_host, opencl, vulkan, metal/.test(e.message),
    );
    assert.throws(
      () => device('gpu:0'),
      (e: Error) => e instanceof TvmValueError && /unknown device 'gpu:0'/.test(e.message),
    );
  });

  it('BAD CALL - a bad device index is a TvmValueError', () => {
    for (const [kind, index] of [
      ['cuda:x', undefined],
      ['cpu:-1', undefined],
      ['cuda', 1.5],
      ['cuda', -2],
    ] as const) {
      assert.throws(
        () => device(kind, index),
        (e: Error) => e instanceof TvmValueError && /index must be a whole number/.test(e.message),
        `${kind} ${index}`,
      );
    }
  });

  it("runtimeLibraries() reports libtvm_runtime_extra.so loaded and the CUDA sidecar's status", () => {
    const libs = runtimeLibraries();
    const extra = libs.find((l) => l.name === 'libtvm_runtime_extra.so');
    assert.deepEqual(extra && { ...extra, path: fs.realpathSync(extra.path) }, {
      name: 'libtvm_runtime_extra.so',
      path: fs.realpathSync(path.join(repoRoot, 'tvm', 'lib', 'libtvm_runtime_extra.so')),
      loaded: true,
    });
    const c = cudaLib();
    assert.ok(c, 'libtvm_runtime_cuda.so is listed');
    assert.equal(typeof c.loaded, 'boolean');
    // Loaded exactly when the runtime has a CUDA device API; otherwise the loader's reason is kept.
    assert.equal(c.loaded, cuda().enabled);
    if (!c.loaded) assert.match(c.error ?? '', /libcudart\.so\.\d+: cannot open shared object file/);
  });

  it('sync() on the cpu returns once copies are done', async () => {
    const t = Tensor.empty([1024], 'int32');
    const data = Int32Array.from({ length: 1024 }, (_, i) => i * 3 - 7);
    await t.copyFrom(data);
    assert.equal(cpu().sync(), undefined);
    const out = t.toArraySync();
    assert.deepEqual([out[0], out[1023]], [-7, 3062]);
  });

  describe('CUDA', () => {
    it('cuda() when libtvm_runtime_cuda.so cannot load (no libcudart): DeviceError naming the device and cause', function () {
      // Only where the CUDA sidecar did not load, e.g. a machine without the CUDA runtime.
      if (cudaLib()?.loaded) this.skip();
      const d = cuda();
      assert.equal(d.enabled, false);
      assert.equal(d.exists, false);
      assert.equal(d.name, undefined);
      assert.equal(d.totalMemory, undefined);
      const cause = (e: Error) =>
        e instanceof DeviceError &&
        /^cuda\(0\): the linked TVM runtime has no cuda device API \(libtvm_runtime_cuda\.so: libcudart\.so\.\d+: cannot open shared object file/.test(
          e.message,
        );
      assert.throws(() => Tensor.empty([2], 'float32', cuda()), cause);
      assert.throws(() => Tensor.fromSync([1, 2], { device: cuda() }), cause);
      assert.throws(() => Tensor.fromSync([1, 2]).copyToSync(cuda()), cause);
      assert.throws(() => d.sync(), cause);
      assert.throws(() => d.assertAvailable(), cause);
      // The same for any index and for pinned host memory, which the same sidecar provides.
      assert.throws(
        () => Tensor.empty([2], 'float32', cuda(1)),
        (e: Error) => e instanceof DeviceError && /^cuda\(1\):.*libcudart/.test(e.message),
      );
      assert.throws(
        () => Tensor.empty([2], 'float32', device('cuda_host')),
        (e: Error) => e instanceof DeviceError && /^cuda_host\(0\):.*libtvm_runtime_cuda\.so.*libcudart/.test(e.message),
      );
    });

    it('cuda(n) past the last GPU is a DeviceError "does not exist" (skipped without the CUDA runtime)', function () {
      if (!cuda().enabled) this.skip(); // needs a loadable libtvm_runtime_cuda.so
      const d = cuda(64);
      assert.equal(d.enabled, true);
      assert.equal(d.exists, false);
      assert.throws(
        () => Tensor.empty([2], 'float32', d),
        (e: Error) => e instanceof DeviceError && /^cuda\(64\) does not exist on this machine$/.test(e.message),
      );
    });

    it('cuda(0) reports its attributes and holds data (skipped without a CUDA GPU)', function () {
      if (!cuda().exists) this.skip(); // no usable CUDA device on this machine
      const d = cuda();
      assert.equal(typeof d.name, 'string');
      assert.match(d.computeVersion ?? '', /^\d+\.\d+$/);
      assert.ok((d.totalMemory ?? 0) > 0 && (d.multiProcessorCount ?? 0) > 0 && d.warpSize === 32);
      const t = Tensor.fromSync([1, 2, 3], { device: d });
      d.sync();
      assert.deepEqual(Array.from(t.toArraySync() as Float32Array), [1, 2, 3]);
    });
  });

  describe('devices this runtime is built without', () => {
    const fixes: Record<string, RegExp> = {
      vulkan: /build TVM with USE_OPENCL\/USE_VULKAN and point TVM_HOME at it/,
      opencl: /build TVM with USE_OPENCL\/USE_VULKAN and point TVM_HOME at it/,
      metal: /use a TVM runtime built with it/,
    };
    for (const [kind, make] of [
      ['vulkan', vulkan],
      ['opencl', opencl],
      ['metal', metal],
    ] as const) {
      it(`${kind}(): enabled/exists false and use is a DeviceError naming ${kind} and the fix (skipped if built in)`, function () {
        const d = make();
        if (d.enabled) this.skip(); // vulkan/opencl/metal built into this runtime: no missing-device error to check
        assert.equal(d.exists, false);
        assert.equal(d.name, undefined);
        const named = (e: Error) =>
          e instanceof DeviceError && e.message.startsWith(`${kind}(0): the linked TVM runtime has no ${kind} device API; `) && fixes[kind].test(e.message);
        assert.throws(() => Tensor.empty([2], 'float32', d), named);
        assert.throws(() => Tensor.fromSync([1], { device: d }), named);
        assert.throws(() => d.sync(), named);
      });
    }

    it('a device type TVM does not know is disabled and a DeviceError, not a process abort', () => {
      const d = new Device(99);
      assert.deepEqual([d.kind, d.toString(), d.enabled, d.exists], ['type99', 'type99(0)', false, false]);
      assert.throws(
        () => Tensor.empty([2], 'float32', d),
        (e: Error) => e instanceof DeviceError && /^type99\(0\): the linked TVM runtime has no type99 device API/.test(e.message),
      );
    });
  });
});
