import { randomBytes } from "node:crypto";

/** Short random ids: 12 hex digits keep socket paths short and collisions negligible. */
export function newId(): string {
  return randomBytes(6).toString("hex");
}

export const ID_PATTERN = /^[0-9a-f]{12}$/;

/** Whether `value` is a well-formed VM or workspace id (and so safe to use in a path). */
export function isId(value: unknown): value is string {
  return typeof value === "string" && ID_PATTERN.test(value);
}
