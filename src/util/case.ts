/** `vmId` → `vm_id`: JSON output and MCP speak snake_case, the SDK camelCase, of the same words. */
export function snakeKey(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

export function toSnake(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(toSnake);
  if (value !== null && typeof value === "object" && !(value instanceof Buffer)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [snakeKey(k), toSnake(v)]));
  }
  return value;
}
