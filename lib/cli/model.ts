/**
 * Opening a model for a CLI command: the device checked first, the VM loaded on it, and the
 * function to call looked up (an unknown function is a usage error listing the others).
 */
import { type Device, DeviceType } from '../device';
import { type PackedFunc, requireGlobalFunc } from '../function';
import { VirtualMachine, type VMFunctionInfo } from '../vm';
import { UsageError } from './errors';

/** A loaded model and the function a command calls. */
export interface OpenModel {
  vm: VirtualMachine;
  fn: VMFunctionInfo;
}

/** `main(x, w)` */
export const signatureOf = (fn: VMFunctionInfo): string => `${fn.name}(${fn.params.join(', ')})`;

/** Loads `path` on `device` (plus the CPU host) and finds `fnName`. */
export async function openModel(path: string, device: Device, fnName: string, concurrency?: number): Promise<OpenModel> {
  device.assertAvailable();
  const vm = await VirtualMachine.load(path, { devices: [device], concurrency });
  try {
    const fns = vm.functions();
    const fn = fns.find((f) => f.name === fnName);
    if (!fn) {
      throw new UsageError(`the model has no function '${fnName}'`, `its functions: ${fns.map(signatureOf).join(', ') || '(none)'}; pick one with --function`);
    }
    return { vm, fn };
  } catch (err) {
    await vm.dispose();
    throw err;
  }
}

let streamSync: PackedFunc | undefined;

/**
 * Waits, off the JS thread, for the work queued on `device`'s default stream (kernel launches
 * on GPUs return before the kernels finish). A no-op for the CPU, whose runs are synchronous.
 */
export async function syncDevice(device: Device): Promise<void> {
  if (device.deviceType === DeviceType.cpu) return;
  streamSync ??= requireGlobalFunc('runtime.Device_StreamSync');
  await streamSync.call(device, 0);
}
