/** The part of the Web Storage API the client uses (localStorage fits). */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** A storage that keeps everything in memory, for one process. */
export function memoryStorage(): StorageLike {
  const m = new Map<string, string>();
  return {
    getItem: (k) => (m.has(k) ? m.get(k)! : null),
    setItem: (k, v) => void m.set(k, String(v)),
    removeItem: (k) => void m.delete(k),
  };
}

/** localStorage when it is there and writable, memory otherwise. */
export function defaultStorage(): StorageLike {
  try {
    const ls = (globalThis as any).localStorage as StorageLike | undefined;
    if (ls) {
      ls.setItem('herald:probe', '1');
      ls.removeItem('herald:probe');
      return ls;
    }
  } catch {
    // private mode, sandboxed frame, or no storage at all
  }
  return memoryStorage();
}
