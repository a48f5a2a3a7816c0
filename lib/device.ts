/**
 * Devices: where tensors live and models run. Mirrors TVM's `tvm.cpu()`, `tvm.cuda(i)`, ...
 */
import { addon, factories } from './binding';
import { DeviceError, TvmTypeError, TvmValueError } from './errors';
import { checkNumber, received } from './options';

/** DLPack device type codes (dlpack.h), as TVM uses them. */
export const DeviceType = {
  cpu: 1,
  cuda: 2,
  cuda_host: 3,
  opencl: 4,
  vulkan: 7,
  metal: 8,
  rocm: 10,
  ext_dev: 12,
  webgpu: 15,
} as const;

/** A device kind name: `'cpu'`, `'cuda'`, `'vulkan'`, `'opencl'`, `'metal'`, ... */
export type DeviceKind = keyof typeof DeviceType;

const KIND_OF: Record<number, DeviceKind> = Object.fromEntries(Object.entries(DeviceType).map(([k, v]) => [v, k as DeviceKind])) as Record<number, DeviceKind>;

/** TVM's DeviceAttrKind codes (tvm/runtime/device_api.h). */
const Attr = {
  exist: 0,
  maxThreadsPerBlock: 1,
  warpSize: 2,
  computeVersion: 4,
  deviceName: 5,
  maxClockRate: 6,
  multiProcessorCount: 7,
  apiVersion: 11,
  driverVersion: 12,
  totalGlobalMemory: 14,
  availableGlobalMemory: 15,
} as const;

/** The library that provides each device type's runtime, to explain why it is missing. */
const PROVIDER: Partial<Record<DeviceKind, string>> = {
  cuda: 'libtvm_runtime_cuda.so',
  cuda_host: 'libtvm_runtime_cuda.so',
};

/**
 * TVM encodes a device of an RPC session as `type + (sessionIndex + 1) * RPC_SESS_MASK`
 * (python/tvm/runtime/device.py); such a device lives on the session's peer.
 */
export const RPC_SESS_MASK = 128;

/** Local devices found usable (`type:id`): {@link Device.assertAvailable} does not ask TVM again. */
const AVAILABLE = new Set<string>();

/** A TVM device: a device type and an index, e.g. `cuda(0)`, local or on an RPC peer. */
export class Device {
  /** Lets the native layer recognize a device argument. @internal */
  readonly _tvmKind = 'device';

  constructor(
    /** DLPack device type code. */
    readonly deviceType: number,
    /** Device index. */
    readonly deviceId = 0,
  ) {}

  /** The kind name, e.g. `'cuda'` (also for a device on an RPC peer). */
  get kind(): DeviceKind | `type${number}` {
    return KIND_OF[this.localType] ?? `type${this.localType}`;
  }

  /** The device type on the machine that owns the device (the RPC mask removed). */
  get localType(): number {
    return this.deviceType % RPC_SESS_MASK;
  }

  /** The RPC session table index of a remote device, or -1 for a local one. */
  get sessionIndex(): number {
    return Math.floor(this.deviceType / RPC_SESS_MASK) - 1;
  }

  /** Whether the device is on an RPC peer (its data moves over the session's socket). */
  get isRemote(): boolean {
    return this.deviceType >= RPC_SESS_MASK;
  }

  /**
   * Whether the linked runtime has this device type at all (built with its device API).
   * A remote device's availability is the peer's to say: true here.
   */
  get enabled(): boolean {
    if (this.isRemote) return true;
    // TVM rejects device type codes it has never heard of (e.g. 99) instead of answering.
    if (!(this.deviceType in KIND_OF)) return false;
    return addon.deviceEnabled(this.deviceType);
  }

  /** Whether this device exists (its runtime is present and the index is valid). Local devices only. */
  get exists(): boolean {
    if (this.isRemote) return true;
    return this.enabled && addon.deviceAttr(this.deviceType, this.deviceId, Attr.exist) === true;
  }

  private attr(kind: number): number | string | undefined {
    if (this.isRemote || !this.exists) return undefined;
    const v = addon.deviceAttr(this.deviceType, this.deviceId, kind);
    return typeof v === 'boolean' ? Number(v) : v;
  }

  /** Device name as the driver reports it (GPUs). */
  get name(): string | undefined {
    return this.attr(Attr.deviceName) as string | undefined;
  }
  /** Maximum threads per block (GPUs). */
  get maxThreadsPerBlock(): number | undefined {
    return this.attr(Attr.maxThreadsPerBlock) as number | undefined;
  }
  /** Warp / wavefront size (GPUs). */
  get warpSize(): number | undefined {
    return this.attr(Attr.warpSize) as number | undefined;
  }
  /** Compute capability, e.g. `'9.0'` (CUDA). */
  get computeVersion(): string | undefined {
    return this.attr(Attr.computeVersion) as string | undefined;
  }
  /** Number of multiprocessors (GPUs). */
  get multiProcessorCount(): number | undefined {
    return this.attr(Attr.multiProcessorCount) as number | undefined;
  }
  /** Total device memory in bytes, where the device API reports it. */
  get totalMemory(): number | undefined {
    return this.attr(Attr.totalGlobalMemory) as number | undefined;
  }
  /** Free device memory in bytes, where the device API reports it. */
  get availableMemory(): number | undefined {
    return this.attr(Attr.availableGlobalMemory) as number | undefined;
  }

  /** Waits for all work queued on the device's default stream. */
  sync(): void {
    this.assertAvailable();
    addon.deviceSync(this.deviceType, this.deviceId);
  }

  /** Throws a {@link DeviceError} naming the cause when the device cannot be used. */
  assertAvailable(): void {
    // Asked on every allocation: a device found usable once is not asked about again (two
    // calls into TVM's device registry each time were a measurable part of a small tensor's cost).
    const key = `${this.deviceType}:${this.deviceId}`;
    if (AVAILABLE.has(key)) return;
    if (!this.enabled) {
      const lib = PROVIDER[this.kind as DeviceKind];
      const status = lib && addon.runtimeLibraries().find((l) => l.name === lib);
      const why = status && !status.loaded ? ` (${lib}: ${status.error})` : '';
      throw new DeviceError(
        'DeviceError',
        `${this}: the linked TVM runtime has no ${this.kind} device API${why}; ` +
          (this.kind === 'opencl' || this.kind === 'vulkan'
            ? 'build TVM with USE_OPENCL/USE_VULKAN and point TVM_HOME at it'
            : 'use a TVM runtime built with it'),
      );
    }
    if (!this.exists) throw new DeviceError('DeviceError', `${this} does not exist on this machine`);
    if (!this.isRemote) AVAILABLE.add(key);
  }

  /** Same device type and index. */
  equals(other: Device): boolean {
    return this.deviceType === other.deviceType && this.deviceId === other.deviceId;
  }

  toString(): string {
    const local = `${this.kind}(${this.deviceId})`;
    return this.isRemote ? `remote[${this.sessionIndex}]:${local}` : local;
  }
}

/** Largest device index: DLPack's `device_id` is an int32. */
const MAX_INDEX = 2 ** 31 - 1;

/**
 * `index` checked for a device of `kind`: a whole number >= 0; for the CPU only 0, since TVM
 * has one CPU device (its `cpu(i)` ignores `i`; its threads are set with `TVM_NUM_THREADS`).
 * Whether a GPU index exists is told when the device is used ({@link Device.assertAvailable}).
 * @internal
 */
export function checkIndex(caller: string, kind: string, index: unknown): number {
  const i = checkNumber(`${caller}: index`, index, { min: 0, max: MAX_INDEX, integer: true }, 0);
  if (kind === 'cpu' && i !== 0) {
    throw new TvmValueError('ValueError', `${caller}: index must be 0 (TVM has one CPU device, cpu(0); set its threads with TVM_NUM_THREADS), got ${i}`);
  }
  return i;
}

/**
 * A device by kind name and index: `device('cuda', 1)` or `device('cuda:1')`. An unknown
 * kind, a malformed name, a negative or fractional index, or a CPU index other than 0 is a
 * {@link TvmValueError}.
 */
export function device(kind: DeviceKind | string, index?: number): Device {
  if (typeof kind !== 'string') throw new TvmTypeError('TypeError', `device: kind must be a device name such as 'cpu' or 'cuda:0', got ${received(kind)}`);
  const [name, id, ...rest] = kind.split(':');
  const type = Object.hasOwn(DeviceType, name) ? DeviceType[name as DeviceKind] : undefined;
  if (type === undefined || rest.length > 0) {
    throw new TvmValueError('ValueError', `unknown device '${kind}' (known: ${Object.keys(DeviceType).join(', ')}; write KIND or KIND:INDEX)`);
  }
  const caller = `device(${received(kind)})`;
  if (id === undefined) return new Device(type, checkIndex(caller, name, index));
  if (index !== undefined) throw new TvmValueError('ValueError', `${caller}: the name gives the index; give no index argument, got ${received(index)}`);
  if (!/^\d+$/.test(id)) throw new TvmValueError('ValueError', `${caller}: index must be a whole number >= 0, got ${received(id)}`);
  return new Device(type, checkIndex(caller, name, Number(id)));
}

/** The host CPU; TVM has one, `cpu(0)` (another index is a {@link TvmValueError}). */
export const cpu = (index?: number): Device => new Device(DeviceType.cpu, index === undefined ? 0 : checkIndex('cpu', 'cpu', index));
/** An NVIDIA GPU (needs the CUDA runtime sidecar and libcudart). */
export const cuda = (index?: number): Device => new Device(DeviceType.cuda, checkIndex('cuda', 'cuda', index));
/** A Vulkan device (needs a TVM runtime built with USE_VULKAN). */
export const vulkan = (index?: number): Device => new Device(DeviceType.vulkan, checkIndex('vulkan', 'vulkan', index));
/** An OpenCL device, e.g. RK3588's Mali GPU (needs a TVM runtime built with USE_OPENCL). */
export const opencl = (index?: number): Device => new Device(DeviceType.opencl, checkIndex('opencl', 'opencl', index));
/** An Apple GPU (needs a TVM runtime built with Metal). */
export const metal = (index?: number): Device => new Device(DeviceType.metal, checkIndex('metal', 'metal', index));

factories.device = (type, id) => new Device(type, id);
