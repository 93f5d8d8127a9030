import { gzipSync } from "node:zlib";
import { Header, type HeaderData } from "tar";

export interface RawEntry {
  path: string;
  type?: NonNullable<HeaderData["type"]>;
  data?: string | Buffer;
  linkpath?: string;
  mode?: number;
}

/**
 * Builds a tar archive byte by byte, including entries no well-behaved tool
 * would write (`../escape`, absolute paths, devices), to test refusals.
 */
export function makeTar(entries: RawEntry[], options: { gzip?: boolean } = {}): Buffer {
  const blocks: Buffer[] = [];
  for (const entry of entries) {
    const data = entry.data === undefined ? Buffer.alloc(0) : Buffer.from(entry.data);
    const type = entry.type ?? "File";
    const header = new Header({
      path: entry.path,
      type,
      mode: entry.mode ?? (type === "Directory" ? 0o755 : 0o644),
      size: type === "File" ? data.length : 0,
      linkpath: entry.linkpath,
      mtime: new Date(1_700_000_000_000),
      uid: 0,
      gid: 0,
    });
    const block = Buffer.alloc(512);
    header.encode(block, 0);
    blocks.push(block);
    if (type === "File" && data.length) {
      blocks.push(data, Buffer.alloc((512 - (data.length % 512)) % 512));
    }
  }
  blocks.push(Buffer.alloc(1024));
  const tar = Buffer.concat(blocks);
  return options.gzip ? gzipSync(tar) : tar;
}
