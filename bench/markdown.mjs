// bench/markdown.mjs: writes one benchmark's section of BENCHMARKS.md, between
// `<!-- TAG: begin -->` and `<!-- TAG: end -->` (replaced in place, else appended).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BENCHMARKS_FILE = join(dirname(fileURLToPath(import.meta.url)), '..', 'BENCHMARKS.md');

export function writeBenchmarkSection(tag, lines, file = BENCHMARKS_FILE) {
  const begin = `<!-- ${tag}: begin -->`;
  const end = `<!-- ${tag}: end -->`;
  const section = [begin, ...lines, end].join('\n');
  let text = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmarks\n\nEvery number here comes from a script in bench/; each section says the command.\n';
  if (text.includes(begin) && text.includes(end)) {
    text = text.slice(0, text.indexOf(begin)) + section + text.slice(text.indexOf(end) + end.length);
  } else {
    text = `${text.trimEnd()}\n\n${section}\n`;
  }
  writeFileSync(file, text);
  return file;
}
