// createVm + startVm when you need to inspect the VM before the final command;
// execVm runs that command and deletes the VM afterwards.
//   npx tsx examples/sdk_lifecycle.ts
import { Pyro } from "pyro-mcp";

const pyro = new Pyro();
const vm = await pyro.createVm({ environment: "debian:12", memMib: 512 });
console.log(`created ${vm.vmId} (${vm.state})`);
const started = await pyro.startVm(vm.vmId);
console.log(`started: ${started.state}, boot ${started.bootMode}, accel ${started.accel}`);
const status = await pyro.statusVm(vm.vmId);
console.log(`status: ${status.state}, expires ${status.expiresAt}`);
const result = await pyro.execVm(vm.vmId, { command: "cat /etc/debian_version" });
console.log(`debian ${result.stdout.trim()}; VM deleted: ${result.cleanup?.vmDeleted}`);
