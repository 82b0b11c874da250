// GPU discovery and live stats. node-nvidia-smi runs `nvidia-smi -q -x` (found on PATH) and turns
// its XML into objects; this module reduces that to the Gpu shape of PROTOCOL.md §2. A machine
// without nvidia-smi, or where it fails (no driver, no device), has no GPUs: the node then runs
// one CPU slot, so the platform works on a laptop and in CI.
import { createRequire } from 'node:module';
import { NVIDIA_SMI_TIMEOUT_MS } from './config.js';

const require = createRequire(import.meta.url);
type SmiCallback = (err: unknown, data?: unknown) => void;
const nvidiaSmi = require('node-nvidia-smi') as (cb: SmiCallback) => void;

/** PROTOCOL.md §2. A reading the driver reports as "N/A" (e.g. utilization under MIG) is null. */
export interface Gpu {
  index: number;
  name: string;
  uuid: string;
  memoryTotalMiB: number | null;
  memoryUsedMiB: number | null;
  utilizationPct: number | null;
  temperatureC: number | null;
  powerW: number | null;
}

export type GpuQuery =
  | { ok: true; gpus: Gpu[]; driverVersion: string | null; cudaVersion: string | null }
  | { ok: false; reason: string };

/** Runs nvidia-smi once. Never throws: every failure is "no GPUs" with the reason. */
export async function queryGpus(timeoutMs = NVIDIA_SMI_TIMEOUT_MS): Promise<GpuQuery> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const data = await Promise.race([
      new Promise<unknown>((resolve, reject) =>
        nvidiaSmi((err, out) => (err ? reject(err) : resolve(out))),
      ),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`nvidia-smi gave no answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    return parseNvidiaSmi(data);
  } catch (err) {
    return { ok: false, reason: describeSmiError(err) };
  } finally {
    clearTimeout(timer);
  }
}

function describeSmiError(err: unknown): string {
  if (typeof err === 'string') return err.trim() || 'nvidia-smi wrote to stderr';
  if (err instanceof Error) {
    const code = (err as Error & { code?: unknown }).code;
    // exec runs through /bin/sh, which answers 127 when the command is not on PATH.
    if (code === 127 || /not found/.test(err.message)) return 'nvidia-smi is not on PATH';
    return err.message.split('\n')[0];
  }
  return String(err);
}

/** Exported for tests: the object node-nvidia-smi makes of `nvidia-smi -q -x`. */
export function parseNvidiaSmi(data: unknown): GpuQuery {
  const log = (data as { nvidia_smi_log?: Record<string, unknown> } | null)?.nvidia_smi_log;
  if (!log || typeof log !== 'object') return { ok: false, reason: 'nvidia-smi output has no <nvidia_smi_log>' };
  const raw = log.gpu;
  // xml2js (explicitArray: false) gives one object for one GPU and an array for several.
  const list = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
  const gpus = list.map((g: Record<string, any>, position): Gpu => {
    const power = g.gpu_power_readings ?? g.power_readings ?? {};
    return {
      // nvidia-smi lists GPUs in its own index order (PCI bus order), which -q -x does not print.
      index: position,
      name: text(g.product_name) ?? 'unknown GPU',
      uuid: text(g.uuid) ?? `index-${position}`,
      memoryTotalMiB: number(g.fb_memory_usage?.total),
      memoryUsedMiB: number(g.fb_memory_usage?.used),
      utilizationPct: number(g.utilization?.gpu_util),
      temperatureC: number(g.temperature?.gpu_temp),
      // Newer drivers split power_draw into average and instant readings.
      powerW: number(power.power_draw) ?? number(power.average_power_draw) ?? number(power.instant_power_draw),
    };
  });
  return {
    ok: true,
    gpus,
    driverVersion: text(log.driver_version),
    cudaVersion: text(log.cuda_version),
  };
}

function text(v: unknown): string | null {
  if (typeof v === 'string' && v.trim() !== '') return v.trim();
  // xml2js puts text next to attributes under "_".
  if (v && typeof v === 'object' && typeof (v as { _?: unknown })._ === 'string') return text((v as { _: string })._);
  return null;
}

/** "143771 MiB", "35 C", "80.54 W", "0 %" -> the number; "N/A", "[Not Supported]" -> null. */
function number(v: unknown): number | null {
  const t = text(v);
  if (t === null) return null;
  const m = /^-?\d+(\.\d+)?/.exec(t);
  return m ? Number(m[0]) : null;
}
