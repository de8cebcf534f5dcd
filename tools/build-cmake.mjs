#!/usr/bin/env node
// build-cmake.mjs: builds the CMake side (C++ test runner, libbyol_cuda.so when nvcc and
// cuDNN/cuBLAS are found) through cmake-js into build-cmake/. Separate from node-gyp's
// build/ because `node-gyp rebuild` deletes build/ whole.
// Extra arguments pass through to cmake-js (e.g. --CDBYOL_CUDA=OFF).
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cmakeJs = join(root, 'node_modules', '.bin', 'cmake-js');
const args = ['build', '-d', root, '-O', join(root, 'build-cmake'), ...process.argv.slice(2)];
const result = spawnSync(cmakeJs, args, { stdio: 'inherit', cwd: root });
if (result.error) {
  console.error(`build-cmake: could not run ${cmakeJs}: ${result.error.message} (run npm ci first)`);
  process.exit(1);
}
process.exit(result.status ?? 1);
