import type { Provider } from '../modules/compute/entity.js';
import type { ProviderAdapter } from './types.js';

export class ProviderRegistry {
  private readonly adapters = new Map<Provider, ProviderAdapter>();

  register(adapter: ProviderAdapter): this {
    if (this.adapters.has(adapter.name)) throw new Error(`provider ${adapter.name} is registered twice`);
    this.adapters.set(adapter.name, adapter);
    return this;
  }

  get(name: Provider): ProviderAdapter {
    const adapter = this.adapters.get(name);
    if (!adapter) {
      throw new Error(`no adapter for provider ${name}; registered: ${[...this.adapters.keys()].join(', ') || 'none'}`);
    }
    return adapter;
  }

  has(name: Provider): boolean {
    return this.adapters.has(name);
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.adapters.values()].map((a) => a.close?.()));
  }
}
