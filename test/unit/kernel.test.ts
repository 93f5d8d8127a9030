import assert from "node:assert/strict";
import { test } from "node:test";
import { newestRelease } from "../../src/environments/kernel.js";

test("kernel releases sort newest first, their numbers compared as numbers", () => {
  const releases = ["6.1.0-9-cloud-amd64", "6.1.0-10-cloud-amd64", "6.1.0-28-cloud-amd64", "5.10.0-32-cloud-amd64", "6.12.0-1-cloud-amd64"];
  assert.deepEqual(releases.sort(newestRelease), ["6.12.0-1-cloud-amd64", "6.1.0-28-cloud-amd64", "6.1.0-10-cloud-amd64", "6.1.0-9-cloud-amd64", "5.10.0-32-cloud-amd64"]);
});
