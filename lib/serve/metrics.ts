/**
 * The serving metrics, in Prometheus' text format at `/metrics` (prom-client: the registry,
 * counters, histograms and the text exposition every Prometheus scraper reads, plus Node's
 * own process and event-loop metrics). One registry per server, so two servers in one
 * process (tests) keep their counts apart.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { ModelRepository } from '../rpc/repository';

/** The protocols requests arrive by (a label of every request metric). */
export type Protocol = 'http' | 'grpc' | 'rpc';

/** What one finished inference request measured. */
export interface RequestRecord {
  model: string;
  protocol: Protocol;
  /** Seconds from arrival to the model's run starting (loads and waits included). */
  queueS: number;
  /** Seconds the model ran. */
  computeS: number;
  /** Seconds from arrival to the answer being ready. */
  totalS: number;
  /** Why it failed (a {@link ServeError}'s kind), or undefined when it succeeded. */
  failure?: string;
}

/** Latency buckets, seconds: 50 µs to 10 s. */
const LATENCY_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class ServeMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'model' | 'protocol'>;
  private readonly failures: Counter<'model' | 'protocol' | 'reason'>;
  private readonly queue: Histogram<'model' | 'protocol'>;
  private readonly compute: Histogram<'model' | 'protocol'>;
  private readonly total: Histogram<'model' | 'protocol'>;
  private readonly bytes: Counter<'protocol' | 'direction'>;
  /** Inference requests being served now (a gauge the server moves). */
  readonly inFlight: Gauge;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'tvm_node_' });
    this.requests = new Counter({
      name: 'tvm_node_inference_requests_total',
      help: 'Inference requests, by model and protocol',
      labelNames: ['model', 'protocol'],
      registers,
    });
    this.failures = new Counter({
      name: 'tvm_node_inference_failures_total',
      help: 'Inference requests that failed, by model, protocol and reason',
      labelNames: ['model', 'protocol', 'reason'],
      registers,
    });
    const histogram = (name: string, help: string) => new Histogram({ name, help, labelNames: ['model', 'protocol'], buckets: LATENCY_BUCKETS, registers });
    this.queue = histogram('tvm_node_inference_queue_seconds', 'Time from arrival to the run starting (model loads and waits for a VM included)');
    this.compute = histogram('tvm_node_inference_compute_seconds', 'Time the model ran');
    this.total = histogram('tvm_node_inference_duration_seconds', 'Time from arrival to the answer being ready');
    this.bytes = new Counter({
      name: 'tvm_node_bytes_total',
      help: 'Request and response body bytes, by protocol',
      labelNames: ['protocol', 'direction'],
      registers,
    });
    this.inFlight = new Gauge({ name: 'tvm_node_inference_in_flight', help: 'Inference requests being served now', registers });
  }

  /** Counts a finished request; failures that never reached a model are counted under model "". */
  request(r: RequestRecord): void {
    const labels = { model: r.model, protocol: r.protocol };
    this.requests.inc(labels);
    this.total.observe(labels, r.totalS);
    if (r.failure !== undefined) {
      this.failures.inc({ ...labels, reason: r.failure });
      return;
    }
    this.queue.observe(labels, r.queueS);
    this.compute.observe(labels, r.computeS);
  }

  /** Counts body bytes that came in or went out. */
  transferred(protocol: Protocol, direction: 'in' | 'out', n: number): void {
    if (n > 0) this.bytes.inc({ protocol, direction }, n);
  }

  /** Follows the repository's cache: hits, misses, loads and their time, load failures, evictions (by reason). */
  watch(repo: ModelRepository): void {
    const registers = [this.registry];
    const hits = new Counter({ name: 'tvm_node_model_cache_hits_total', help: 'Requests that found their model loaded', labelNames: ['model'], registers });
    const misses = new Counter({ name: 'tvm_node_model_cache_misses_total', help: 'Requests that had to load their model', labelNames: ['model'], registers });
    const loads = new Counter({ name: 'tvm_node_model_loads_total', help: 'Model loads', labelNames: ['model'], registers });
    const loadErrors = new Counter({ name: 'tvm_node_model_load_failures_total', help: 'Model loads that failed', labelNames: ['model'], registers });
    const evictions = new Counter({
      name: 'tvm_node_model_evictions_total',
      help: 'Models dropped from the cache (lfu: room for another; stale: file replaced; unload: asked to)',
      labelNames: ['model', 'reason'],
      registers,
    });
    const loadTime = new Histogram({
      name: 'tvm_node_model_load_seconds',
      help: 'Time to load a model (read, link, set up its VM)',
      labelNames: ['model'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30],
      registers,
    });
    new Gauge({
      name: 'tvm_node_models_loaded',
      help: 'Models in the cache now',
      registers,
      collect(this: Gauge) {
        this.set(repo.loaded.length);
      },
    });
    repo
      .on('hit', (model) => hits.inc({ model }))
      .on('miss', (model) => misses.inc({ model }))
      .on('load', (model, seconds) => {
        loads.inc({ model });
        loadTime.observe({ model }, seconds);
      })
      .on('loadError', (model) => loadErrors.inc({ model }))
      .on('evict', (model, reason) => evictions.inc({ model, reason }));
  }

  /** The text a Prometheus scrape gets. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
