#!/usr/bin/env node
/**
 * The `tvm-node` command line: commander wiring only; the commands live in lib/cli/.
 *
 * Exit status: 0 ok; 1 runtime failure (model, device or file error); 2 usage error (bad
 * flag or option value, unknown device kind, inputs that do not fit the function's
 * parameters). Failures print one line `tvm-node: <message> [<kind>]` and a `hint:` line
 * on stderr.
 */
import { Command, CommanderError, Option } from 'commander';
import { benchModel, formatBenchResult } from './cli/bench';
import { CONV_LAYOUTS, type ConvLayout, compileModel, formatCompileResult, type InputShape, PRESETS, parseInputShape } from './cli/compile';
import { demo, demoRepository } from './cli/demo';
import { describeFailure, EXIT, UsageError } from './cli/errors';
import { info } from './cli/info';
import { type DTypeSpec, type InputSpec, parseCount, parseDevice, parseDTypeSpec, parseInputSpec, parseShapeSpec, type ShapeSpec } from './cli/inputs';
import { progressBar, stageBar } from './cli/progress';
import { parseHostPort, rpcServer } from './cli/rpc-server';
import { formatRunResult, runModel } from './cli/run';
import { serve } from './cli/serve';
import { parseDelayOption, parseEndpoint, parseRateOption, shapeLink } from './cli/shape-link';
import { formatCutList, formatSplitResult, listCuts, parseCut, splitModel } from './cli/split';
// The package entry, so every factory the native layer calls back is registered.
import { cpu, type Device, versions } from './index';

/** The command being run, for hints. */
let activeCommand = '';

/** Reports a failure as two stderr lines and sets the exit status. */
function fail(err: unknown): void {
  if (err instanceof CommanderError) {
    const command = (err as CommanderError & { command?: string }).command ?? activeCommand;
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0) {
      process.exitCode = EXIT.ok;
      return;
    }
    // Help shown in place of an error (e.g. no command given): the help says it all.
    if (err.code !== 'commander.help') {
      const message = err.message
        .replace(/^error: /, '')
        .split('\n')
        .map((l) => l.trim())
        .filter(Boolean)
        .join(' ');
      process.stderr.write(`tvm-node: ${message} [usage]\nhint: run \`tvm-node ${command ? `${command} ` : ''}--help\` for usage\n`);
    }
    process.exitCode = EXIT.usage;
    return;
  }
  const { lines, exitCode } = describeFailure(err, activeCommand);
  process.stderr.write(`${lines.join('\n')}\n`);
  process.exitCode = exitCode;
}

/** Turns commander's exits into thrown errors (handled by {@link fail}) and silences its own messages. */
function handleExits(cmd: Command): Command {
  return cmd
    .exitOverride((err) => {
      throw Object.assign(err, { command: cmd.parent ? cmd.name() : '' });
    })
    .configureOutput({ outputError: () => {} });
}

/** An option value parser; a bad value is a usage error naming the option. */
function parsed<T>(flag: string, parse: (text: string) => T): (text: string) => T {
  return (text) => {
    try {
      return parse(text);
    } catch (err) {
      if (err instanceof UsageError) throw new UsageError(`${flag} '${text}': ${err.message}`, err.hint, { cause: err });
      throw err;
    }
  };
}

/** A repeatable option: every occurrence parsed and collected. */
function repeated<T>(flag: string, parse: (text: string) => T): (text: string, prev?: T[]) => T[] {
  const one = parsed(flag, parse);
  return (text, prev) => [...(prev ?? []), one(text)];
}

const deviceOption = () =>
  new Option('-d, --device <device>', 'device to run on: cpu, cuda:0, cuda:1, vulkan, opencl, ...')
    .default(cpu(), 'cpu')
    .argParser(parsed('--device', parseDevice));
const functionOption = () => new Option('-f, --function <name>', 'function of the model to call').default('main');
const inputOption = () =>
  new Option(
    '-i, --input <[name=]file.npy>',
    'an input; NAME=FILE.npy binds parameter NAME, FILE.npy alone the next parameter in order (repeat for each input)',
  ).argParser(repeated('--input', parseInputSpec));

const inputShapeOption = () =>
  new Option(
    '-s, --input-shape <name=dims>',
    'the shape of input NAME, e.g. input=1,3,224,224 (sizes may be names: symbolic); repeat for each input',
  ).argParser(repeated('--input-shape', parseInputShape));
const pythonOption = () =>
  new Option('--python <path>', "the Python with TVM's compiler (default: $TVM_NODE_PYTHON, else the checkout's tvm/.venv/bin/python)");
const targetHelp = (what: string) =>
  `${what}: a preset (${PRESETS.map((p) => p.name).join(', ')}), a TVM target kind (llvm: portable code for this machine's architecture) or a TVM target as JSON`;
const PRESETS_HELP = `Presets:
${PRESETS.map((p) => `  ${p.name.padEnd(12)} ${p.summary}`).join('\n')}
A JSON target looks like '{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a55"}'
(TVM 0.27 refuses "llvm -mcpu=..." strings). Targets for another architecture link with its
cross g++ (Debian: apt-get install -y g++-aarch64-linux-gnu).`;

/** A duration option in whole seconds, up to ~31 years (what timers can wait for). */
const seconds = (t: string) => {
  const n = parseCount(t, 1);
  if (n > 1e9) throw new UsageError('more than 1e9 seconds');
  return n;
};

const EXIT_HELP = `
Exit status: 0 ok, 1 runtime failure (model, device or file error), 2 usage error.`;

const program = handleExits(new Command('tvm-node'))
  .description('The Apache TVM runtime in Node.js')
  .version(versions().tvmNode)
  .addHelpText('after', EXIT_HELP);
program.hook('preSubcommand', (_, sub) => {
  activeCommand = sub.name();
});

handleExits(program.command('demo')).description('compile (on first use) and run the bundled example model').action(demo);

handleExits(program.command('info'))
  .description('versions, where TVM was found, devices present')
  .action(() => info());

handleExits(program.command('run'))
  .description("call a model's function once on inputs from .npy files and summarize the outputs")
  .argument('<model>', 'compiled model: a .so from tvm.compile(...).export_library(...)')
  .addOption(inputOption())
  .addOption(deviceOption())
  .addOption(functionOption())
  .option('-o, --out <dir>', 'write each output as DIR/output<i>.npy (DIR is created)')
  .option('--json', 'print the result as JSON')
  .addHelpText(
    'after',
    `
Parameter names come from the model (vm.functions()); inputs go to --device.
Examples:
  tvm-node run mlp.so --input x=x.npy
  tvm-node run model.so --input a.npy --input b.npy --device cuda:0 -o out/
${EXIT_HELP}`,
  )
  .action(async (model: string, o: { input?: InputSpec[]; device: Device; function: string; out?: string; json?: boolean }) => {
    const result = await runModel({ model, inputs: o.input ?? [], device: o.device, function: o.function, out: o.out });
    console.log(o.json ? JSON.stringify(result, null, 2) : formatRunResult(result));
  });

handleExits(program.command('bench'))
  .description('time many calls of a model function, several in flight, and report latency percentiles and throughput')
  .argument('<model>', 'compiled model: a .so from tvm.compile(...).export_library(...)')
  .addOption(new Option('-n, --runs <n>', 'timed calls').default(100).argParser(parsed('--runs', (t) => parseCount(t, 1))))
  .addOption(new Option('-w, --warmup <n>', 'untimed calls first').default(10).argParser(parsed('--warmup', (t) => parseCount(t, 0))))
  .addOption(new Option('-c, --concurrency <k>', 'calls in flight at once').default(1).argParser(parsed('--concurrency', (t) => parseCount(t, 1))))
  .addOption(deviceOption())
  .addOption(functionOption())
  .addOption(inputOption())
  .addOption(
    new Option('-s, --shape <[name=]dims>', 'random input of this shape, e.g. x=1x3x224x224 (repeat for each input)').argParser(
      repeated('--shape', parseShapeSpec),
    ),
  )
  .addOption(
    new Option('-t, --dtype <[name=]dtype>', 'dtype of the random inputs: DTYPE for all, NAME=DTYPE for one (default: float32)').argParser(
      repeated('--dtype', parseDTypeSpec),
    ),
  )
  .option('--json', 'print the result as JSON')
  .option('--no-progress', 'no progress bar (it is drawn on stderr only when stderr is a terminal)')
  .addHelpText(
    'after',
    `
The VM does not expose input shapes: give every parameter an --input file or a --shape.
Inputs are made once on --device and reused by every call. Random data: floats in [-1, 1),
integers in [0, 8). Latency is per call, issue to result (device work included);
throughput is timed calls per second of wall time. Calls run on Node's libuv thread pool,
widened to --concurrency unless UV_THREADPOOL_SIZE is set.
Examples:
  tvm-node bench mlp.so --input x=x.npy --runs 1000 --concurrency 4
  tvm-node bench resnet.so --shape data=1x3x224x224 --dtype float32 --device cuda:0 --json
${EXIT_HELP}`,
  )
  .action(
    async (
      model: string,
      o: {
        runs: number;
        warmup: number;
        concurrency: number;
        device: Device;
        function: string;
        input?: InputSpec[];
        shape?: ShapeSpec[];
        dtype?: DTypeSpec[];
        json?: boolean;
        progress: boolean;
      },
    ) => {
      const result = await benchModel(
        {
          model,
          device: o.device,
          function: o.function,
          runs: o.runs,
          warmup: o.warmup,
          concurrency: o.concurrency,
          inputs: o.input ?? [],
          shapes: o.shape ?? [],
          dtypes: o.dtype ?? [],
        },
        progressBar(process.stderr, o.progress),
      );
      console.log(o.json ? JSON.stringify(result, null, 2) : formatBenchResult(result));
    },
  );

handleExits(program.command('compile'))
  .description('compile an ONNX model with the pinned TVM into a .so artifact and a manifest beside it (needs the TVM toolchain: a source checkout)')
  .argument('<model>', 'the .onnx model')
  .requiredOption('-o, --out <file.so>', 'the artifact to write; its manifest goes beside it (file.json)')
  .option('-t, --target <preset|target>', targetHelp('the target'), 'host')
  .addOption(inputShapeOption())
  .option('--cc <compiler>', 'the g++ that links a cross target (default: <arch>-linux-gnu-g++, e.g. aarch64-linux-gnu-g++)')
  .addOption(
    new Option(
      '--conv-layout <layout>',
      'NCHWc: CPU convolutions in blocked-channel layouts with a register-blocked schedule, 3x3 stride-1 ones as Winograd kernels (tuned over their choices with --tune)',
    )
      .choices(CONV_LAYOUTS)
      .default('NCHW'),
  )
  .option('--tune', "MetaSchedule-tune the kernels, measuring candidates on this machine (CPU targets of this machine's architecture)")
  .option(
    '--trials <n>',
    '--tune: the most candidates measured, over all kernels (default 64)',
    parsed('--trials', (t) => parseCount(t, 0)),
  )
  .option('--tuning-db <dir>', '--tune: the tuning database, kept and reused (default: $TVM_NODE_TUNING_DB, else ~/.cache/tvm-node/tuning)')
  .option('--tune-time <seconds>', '--tune: a time budget in whole seconds for the measuring', parsed('--tune-time', seconds))
  .option('--rpc-tracker <host:port>', '--tune: measure on a device registered with this TVM RPC tracker (with --rpc-key)')
  .option('--rpc-key <key>', "--tune: the device's key at the tracker")
  .addOption(pythonOption())
  .option('--json', 'print the result as JSON')
  .option('--no-progress', 'no progress bar (it is drawn on stderr only when stderr is a terminal)')
  .option('--verbose', "show the compiler's own output (TVM, LLVM, g++) on stderr")
  .addHelpText(
    'after',
    `
${PRESETS_HELP} The manifest (model.json) names
the ONNX inputs and outputs with their shapes and dtypes, and records the target, the TVM
version and a content hash; Model.load, \`tvm-node run\` and the model repository read it.
Examples:
  tvm-node compile mobilenet_v2.onnx -o mobilenet_v2.so
  tvm-node compile model.onnx -o board/model.so --target rk3588 --input-shape input=1,3,224,224
  tvm-node compile model.onnx -o model.so --tune --trials 200 --tune-time 900
  tvm-node compile model.onnx -o model.so --conv-layout NCHWc --tune --trials 500
With --tune, kernels that already have a record in the tuning database are not tuned again.
${EXIT_HELP}`,
  )
  .action(
    async (
      model: string,
      o: {
        out: string;
        target: string;
        inputShape?: InputShape[];
        cc?: string;
        tune?: boolean;
        trials?: number;
        tuningDb?: string;
        tuneTime?: number;
        rpcTracker?: string;
        rpcKey?: string;
        convLayout: ConvLayout;
        python?: string;
        json?: boolean;
        progress: boolean;
        verbose?: boolean;
      },
    ) => {
      const given = (
        [
          ['--trials', o.trials],
          ['--tuning-db', o.tuningDb],
          ['--tune-time', o.tuneTime],
          ['--rpc-tracker', o.rpcTracker],
          ['--rpc-key', o.rpcKey],
        ] as const
      ).find(([, v]) => v !== undefined);
      if (!o.tune && given) throw new UsageError(`${given[0]} needs --tune`, `add --tune to tune the kernels`);
      const tune = o.tune ? { trials: o.trials, database: o.tuningDb, seconds: o.tuneTime, tracker: o.rpcTracker, key: o.rpcKey } : undefined;
      const result = await compileModel(
        {
          model,
          out: o.out,
          target: o.target,
          inputShapes: o.inputShape ?? [],
          cc: o.cc,
          python: o.python,
          verbose: o.verbose,
          tune,
          convLayout: o.convLayout,
        },
        stageBar(process.stderr, o.progress && !o.verbose),
      );
      console.log(o.json ? JSON.stringify(result, null, 2) : formatCompileResult(result, model));
    },
  );

handleExits(program.command('split'))
  .description('split an ONNX model at cut tensors into stages compiled for an edge device and a server (edge offloading; needs the TVM toolchain)')
  .argument('<model>', 'the .onnx model')
  .addOption(
    new Option('--cut <tensors>', 'a cut: tensor names, comma-separated, that together separate the graph; repeat for more cuts').argParser(
      repeated('--cut', parseCut),
    ),
  )
  .option('-o, --out <dir>', 'the folder to write: graph.json, device/, server/ (a model repository), reference/')
  .option('--device-target <preset|target>', targetHelp("the device's target"), 'llvm')
  .option('--server-target <preset|target>', targetHelp("the server's target"), 'llvm')
  .addOption(inputShapeOption())
  .option('--name <base>', "the server models' base name (default: the model file's name without .onnx)")
  .option('--list-cuts', 'list the tensors that alone cut the graph (no -o needed)')
  .addOption(pythonOption())
  .option('--json', 'print the result (graph.json and timings, or the cut list) as JSON')
  .option('--no-progress', 'no progress bar (it is drawn on stderr only when stderr is a terminal)')
  .option('--verbose', "show the compiler's own output (TVM, LLVM, g++) on stderr")
  .addHelpText(
    'after',
    `
Cuts are ordered by their place in the graph: segment 0 runs from the inputs to the first cut,
segment i from cut i-1 to cut i, the last to the outputs. Within a segment, nodes joined by
tensors made inside it form one stage, so parallel branches are parallel stages. A cut of
several tensors (--cut a,b) must separate the graph with all of them together.
DIR/graph.json describes the split; DIR/device/ holds every stage (and codec.so) for the device;
DIR/server/ is a model repository for \`tvm-node rpc-server --models DIR/server\`, with float16
and int8 entry points (BASE.<stage>.f16, .i8) for stages with float32 inputs; DIR/reference/
holds an input and onnxruntime's output of the unsplit model, which the split was checked against.
When both targets are equal each stage is compiled once.
${PRESETS_HELP}
Examples:
  tvm-node split mobilenet_v2.onnx --list-cuts
  tvm-node split mobilenet_v2.onnx --cut add_36 -o split/ --device-target rk3588 --server-target host
  tvm-node split branchy.onnx --cut stem --cut a_out,b_out -o split/
${EXIT_HELP}`,
  )
  .action(
    async (
      model: string,
      o: {
        cut?: string[][];
        out?: string;
        deviceTarget: string;
        serverTarget: string;
        inputShape?: InputShape[];
        name?: string;
        listCuts?: boolean;
        python?: string;
        json?: boolean;
        progress: boolean;
        verbose?: boolean;
      },
    ) => {
      const common = { model, inputShapes: o.inputShape ?? [], python: o.python, verbose: o.verbose };
      if (o.listCuts) {
        const cuts = await listCuts(common);
        console.log(o.json ? JSON.stringify(cuts, null, 2) : formatCutList(cuts));
        return;
      }
      if (!o.out) throw new UsageError('give -o DIR, the folder to write the split into (or --list-cuts to see where the model can be cut)');
      const result = await splitModel(
        { ...common, out: o.out, cuts: o.cut ?? [], deviceTarget: o.deviceTarget, serverTarget: o.serverTarget, name: o.name },
        stageBar(process.stderr, o.progress && !o.verbose, 'split'),
      );
      console.log(o.json ? JSON.stringify(result, null, 2) : formatSplitResult(result, model));
    },
  );

handleExits(program.command('rpc-server'))
  .description('serve TVM RPC to many clients at once (stock TVM clients and trackers work unchanged)')
  .option('--host <host>', 'address to bind (anything but loopback needs --trust-remote-clients or --inference-only)', '127.0.0.1')
  .addOption(new Option('--port <port>', 'port to listen on (0: any free port)').default(9090).argParser(parsed('--port', (t) => parseCount(t, 0))))
  .option('--key <key>', 'key clients must present (TVM: --key)', '')
  .option('--tracker <host:port>', 'register with this TVM RPC tracker')
  .option('--models <dir>', 'serve the .so models in DIR by name (tvm_node.infer / session.infer)')
  .option('--demo-models', 'serve the bundled demo models (compiled on first use in a source checkout)')
  .addOption(
    new Option('--cache-models <n>', 'most models kept loaded (per session; shared in --inference-only)')
      .default(8)
      .argParser(parsed('--cache-models', (t) => parseCount(t, 1))),
  )
  .option('--trust-remote-clients', 'allow a non-loopback bind: clients can run any code they upload')
  .option('--inference-only', 'serve only the models (tvm_node.infer/models): no upload, no other function, no remote memory; needs --models or --demo-models')
  .addOption(
    new Option('--max-message-mib <n>', 'largest RPC message a client may send, in MiB')
      .default(512)
      .argParser(parsed('--max-message-mib', (t) => parseCount(t, 1))),
  )
  .addOption(
    new Option('--max-upload-mib <n>', 'most bytes a session may upload, in MiB').default(256).argParser(parsed('--max-upload-mib', (t) => parseCount(t, 1))),
  )
  .addOption(new Option('--max-sessions <n>', 'sessions at once').default(16).argParser(parsed('--max-sessions', (t) => parseCount(t, 1))))
  .addOption(
    new Option('--prestart-sessions <n>', 'session processes kept started ahead of need (full TVM mode)')
      .default(2)
      .argParser(parsed('--prestart-sessions', (t) => parseCount(t, 0))),
  )
  .addOption(
    new Option('--max-sessions-per-address <n>', 'sessions one client address may hold at once (default: half of --max-sessions)').argParser(
      parsed('--max-sessions-per-address', (t) => parseCount(t, 1)),
    ),
  )
  .addOption(new Option('--session-timeout <s>', 'longest session, in seconds').argParser(parsed('--session-timeout', seconds)))
  .addOption(new Option('--idle-timeout <s>', 'a session that sends no request this long is ended').default(120).argParser(parsed('--idle-timeout', seconds)))
  .addOption(
    new Option('--read-timeout <s>', 'a request whose bytes stop arriving this long ends its session').default(30).argParser(parsed('--read-timeout', seconds)),
  )
  .addOption(
    new Option('--max-pending-mib <n>', 'bytes of incomplete requests all sessions may hold, in MiB (--inference-only)')
      .default(1024)
      .argParser(parsed('--max-pending-mib', (t) => parseCount(t, 1))),
  )
  .addOption(
    new Option('--shutdown-deadline <s>', 'seconds sessions get to finish on SIGTERM/SIGINT')
      .default(10)
      .argParser(parsed('--shutdown-deadline', (t) => parseCount(t, 0))),
  )
  .addHelpText('after', EXIT_HELP)
  .action(
    async (o: {
      host: string;
      port: number;
      key: string;
      tracker?: string;
      models?: string;
      demoModels?: boolean;
      cacheModels: number;
      trustRemoteClients?: boolean;
      inferenceOnly?: boolean;
      maxMessageMib: number;
      maxUploadMib: number;
      maxSessions: number;
      maxSessionsPerAddress?: number;
      prestartSessions: number;
      sessionTimeout?: number;
      idleTimeout: number;
      readTimeout: number;
      maxPendingMib: number;
      shutdownDeadline: number;
    }) => {
      let tracker: { host: string; port: number } | undefined;
      if (o.tracker) {
        try {
          tracker = parseHostPort(o.tracker);
        } catch (err) {
          throw new UsageError(`--tracker: ${(err as Error).message}`, undefined, { cause: err });
        }
      }
      const modelsDir = o.demoModels ? demoRepository() : o.models;
      if (o.inferenceOnly && !modelsDir) throw new UsageError('--inference-only serves a model repository: give --models DIR or --demo-models');
      // Only RPCServer's own options (it refuses unknown ones): not commander's raw values.
      const { host, port, key, maxSessions, maxSessionsPerAddress, prestartSessions, sessionTimeout, shutdownDeadline } = o;
      await rpcServer({
        host,
        port,
        key,
        maxSessions,
        maxSessionsPerAddress,
        prestartSessions,
        sessionTimeout,
        shutdownDeadline,
        tracker,
        modelsDir,
        cache: { maxModels: o.cacheModels },
        trustRemoteClients: o.trustRemoteClients ?? false,
        inferenceOnly: o.inferenceOnly ?? false,
        maxMessageBytes: o.maxMessageMib * 2 ** 20,
        maxUploadBytes: o.maxUploadMib * 2 ** 20,
        maxPendingBytes: o.maxPendingMib * 2 ** 20,
        idleTimeoutMs: o.idleTimeout * 1000,
        readTimeoutMs: o.readTimeout * 1000,
      });
    },
  );

handleExits(program.command('serve'))
  .description('serve a model repository over KServe v2 HTTP/REST and gRPC (Triton clients work), and optionally TVM RPC, with Prometheus metrics')
  .option('--models <dir>', 'the folder of .so models (and manifests) to serve')
  .option('--demo-models', 'serve the bundled demo models (compiled on first use in a source checkout)')
  .option('--host <host>', 'address every front end binds (all are inference-only)', '127.0.0.1')
  .addOption(new Option('--http <port>', 'HTTP/REST port (0: any free port)').default(8000).argParser(parsed('--http', (t) => parseCount(t, 0))))
  .option('--no-http', 'no HTTP front end')
  .addOption(new Option('--grpc <port>', 'gRPC port (0: any free port)').default(8001).argParser(parsed('--grpc', (t) => parseCount(t, 0))))
  .option('--no-grpc', 'no gRPC front end')
  .addOption(new Option('--rpc <port>', 'also serve TVM RPC (inference-only) on this port').argParser(parsed('--rpc', (t) => parseCount(t, 0))))
  .addOption(new Option('--cache-models <n>', 'most models kept loaded').default(8).argParser(parsed('--cache-models', (t) => parseCount(t, 1))))
  .addOption(
    new Option('--max-in-flight <n>', 'inference requests served at once; more are answered busy (503 / UNAVAILABLE)')
      .default(64)
      .argParser(parsed('--max-in-flight', (t) => parseCount(t, 1))),
  )
  .addOption(
    new Option('--request-timeout <s>', 'a request not answered in this time gets a timeout (504 / DEADLINE_EXCEEDED)')
      .default(30)
      .argParser(parsed('--request-timeout', seconds)),
  )
  .addOption(
    new Option('--max-body-mib <n>', 'largest request body or gRPC message, in MiB').default(64).argParser(parsed('--max-body-mib', (t) => parseCount(t, 1))),
  )
  .addOption(
    new Option('--max-json-mib <n>', 'largest JSON part of an HTTP request, in MiB (large tensors: binary extension)')
      .default(8)
      .argParser(parsed('--max-json-mib', (t) => parseCount(t, 1))),
  )
  .option('--no-preload', 'do not load every model at start (each loads on its first request)')
  .addOption(
    new Option('--log-level <level>', 'log level (JSON lines on stdout)')
      .default('info')
      .choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  )
  .addOption(
    new Option('--shutdown-deadline <s>', 'seconds requests in flight get to finish on SIGTERM/SIGINT')
      .default(10)
      .argParser(parsed('--shutdown-deadline', (t) => parseCount(t, 0))),
  )
  .addHelpText(
    'after',
    `
Endpoints (KServe v2 / Open Inference Protocol, Triton's binary-tensor and model-repository extensions):
  GET  /v2/health/live, /v2/health/ready, /v2, /v2/models/M, /v2/models/M/ready
  POST /v2/models/M/infer, /v2/repository/index, /v2/repository/models/M/load, .../unload
  GET  /metrics (Prometheus)
  gRPC inference.GRPCInferenceService on --grpc (proto/grpc_predict_v2.proto)
Examples:
  tvm-node serve --models models/
  curl localhost:8000/v2/models/mlp
  tvm-node serve --demo-models --http 8080 --no-grpc --rpc 9090
${EXIT_HELP}`,
  )
  .action(
    async (o: {
      models?: string;
      demoModels?: boolean;
      host: string;
      http: number | false;
      grpc: number | false;
      rpc?: number;
      cacheModels: number;
      maxInFlight: number;
      requestTimeout: number;
      maxBodyMib: number;
      maxJsonMib: number;
      preload: boolean;
      logLevel: string;
      shutdownDeadline: number;
    }) => {
      const modelsDir = o.demoModels ? demoRepository() : o.models;
      if (!modelsDir) throw new UsageError('give --models DIR (a folder of .so models) or --demo-models');
      await serve({
        modelsDir,
        host: o.host,
        http: o.http,
        grpc: o.grpc,
        rpc: o.rpc ?? false,
        cache: { maxModels: o.cacheModels },
        maxInFlight: o.maxInFlight,
        requestTimeoutMs: o.requestTimeout * 1000,
        maxBodyBytes: o.maxBodyMib * 2 ** 20,
        maxJsonBytes: o.maxJsonMib * 2 ** 20,
        preload: o.preload,
        logLevel: o.logLevel,
        shutdownDeadline: o.shutdownDeadline,
      });
    },
  );

handleExits(program.command('shape-link'))
  .description('a TCP proxy on loopback that emulates a network link (bandwidth, added latency) between a client and a server')
  .addOption(new Option('--to <host:port>', 'the server to forward to').makeOptionMandatory().argParser(parsed('--to', (t) => parseEndpoint(t, 1))))
  .addOption(
    new Option('--listen <host:port>', 'where clients connect (loopback only; port 0: any free port)')
      .default({ host: '127.0.0.1', port: 0 }, '127.0.0.1:0')
      .argParser(parsed('--listen', (t) => parseEndpoint(t, 0, true))),
  )
  .addOption(
    new Option('--rate <rate>', 'bandwidth each way: 100mbit, 1gbit, 512kbit, 10MB/s, unlimited')
      .default(Number.POSITIVE_INFINITY, 'unlimited')
      .argParser(parsed('--rate', parseRateOption)),
  )
  .addOption(new Option('--delay <delay>', 'added one-way latency: 10ms, 1s, 40 (ms)').default(0, '0ms').argParser(parsed('--delay', parseDelayOption)))
  .addOption(new Option('--up-rate <rate>', 'client -> server bandwidth (default: --rate)').argParser(parsed('--up-rate', parseRateOption)))
  .addOption(new Option('--down-rate <rate>', 'server -> client bandwidth (default: --rate)').argParser(parsed('--down-rate', parseRateOption)))
  .addHelpText(
    'after',
    `
Each connection gets a serialization queue per direction: bytes leave at the rate, then wait
out the delay (a round trip adds twice --delay). Runs until SIGINT/SIGTERM, then prints the
bytes forwarded each way.
Examples:
  tvm-node shape-link --to 127.0.0.1:9090 --listen 127.0.0.1:9091 --rate 100mbit --delay 10ms
  tvm-node shape-link --to 127.0.0.1:9090 --up-rate 20mbit --down-rate 100mbit --delay 20ms
${EXIT_HELP}`,
  )
  .action(
    async (o: {
      to: { host: string; port: number };
      listen: { host: string; port: number };
      rate: number;
      delay: number;
      upRate?: number;
      downRate?: number;
    }) => {
      await shapeLink({
        to: o.to,
        listen: o.listen,
        up: { bandwidth: o.upRate ?? o.rate, latencyMs: o.delay },
        down: { bandwidth: o.downRate ?? o.rate, latencyMs: o.delay },
      });
    },
  );

program.parseAsync(process.argv).catch(fail);
