// data.test.mjs: lib/data: IDX (raw, gzip, real Fashion-MNIST), CIFAR-10/100, STL-10, image
// folders (sharp, in memory and streamed), the synthetic set and the loader (seeded order,
// drop-last, prefetch, views, streaming datasets).
// Every format is written here in small files with known pixels, and every kind of damage
// (missing, truncated, wrong magic, count mismatch, label out of range) must give a
// DatasetError whose message starts with the damaged file's path.
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync, gzipSync } from 'node:zlib';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rejectsMessage, stlImages, stlValue } from './helpers.mjs';

const require = createRequire(import.meta.url);
const data = require('../dist/data/index.js');
const { augmentConfig, augmentPair, augmentBatch } = require('../dist/augment.js');
const { native } = require('../dist/native.js');
const { ByolOptionError } = require('../dist/validate.js');
const { DatasetError } = data;

const tmp = mkdtempSync(join(tmpdir(), 'byol-data-'));
let dirCount = 0;
const freshDir = (name) => {
  const dir = join(tmp, `${name}-${dirCount++}`);
  mkdirSync(dir, { recursive: true });
  return dir;
};

async function rejectsWithFile(promise, file, pattern) {
  let caught;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  assert.ok(caught, `expected a DatasetError for ${file}`);
  assert.instance(caught, DatasetError);
  assert.is(caught.file, file);
  assert.ok(caught.message.startsWith(`${file}: `), caught.message);
  assert.match(caught.message, pattern);
}

// ---------------------------------------------------------------- IDX

function idx(ndim, dims, payload) {
  const header = Buffer.alloc(4 + 4 * ndim);
  header.writeUInt32BE((0x08 << 8) | ndim, 0);
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([header, Buffer.from(payload)]);
}
const idxPixels = (n, h, w) => Uint8Array.from({ length: n * h * w }, (_, i) => (i * 7 + 3) & 255);

test('IDX: raw and gzip files load with their pixels and labels', async () => {
  const dir = freshDir('idx');
  const pixels = idxPixels(5, 4, 3);
  writeFileSync(join(dir, 'train-images-idx3-ubyte.gz'), gzipSync(idx(3, [5, 4, 3], pixels)));
  writeFileSync(join(dir, 'train-labels-idx1-ubyte'), idx(1, [5], [3, 0, 9, 1, 2]));
  const ds = await data.loadFashionMnist(dir);
  assert.is(ds.name, 'fashion-mnist/train');
  assert.equal([ds.n, ds.height, ds.width, ds.channels, ds.classes], [5, 4, 3, 1, 10]);
  assert.equal(Array.from(ds.images), Array.from(pixels));
  assert.equal(Array.from(ds.labels), [3, 0, 9, 1, 2]);
  assert.is(ds.classNames[9], 'Ankle boot');
  const unlabeled = await data.loadIdx({ images: join(dir, 'train-images-idx3-ubyte.gz') });
  assert.is(unlabeled.labels, undefined);
});

test('IDX: every kind of damage names the file', async () => {
  const dir = freshDir('idx-bad');
  const good = idx(3, [4, 2, 2], idxPixels(4, 2, 2));
  const write = (name, bytes) => { const f = join(dir, name); writeFileSync(f, bytes); return f; };
  const images = write('images', good);
  const labels = write('labels', idx(1, [4], [1, 2, 3, 4]));
  await rejectsWithFile(data.loadIdx({ images: join(dir, 'missing'), labels }), join(dir, 'missing'), /file not found/);
  const truncated = write('truncated', good.subarray(0, good.length - 1));
  await rejectsWithFile(data.loadIdx({ images: truncated }), truncated, /truncated: the header declares 4 x 2 x 2 = 16 bytes of data but the file holds 15/);
  const gzTruncated = write('truncated.gz', gzipSync(good).subarray(0, 20));
  await rejectsWithFile(data.loadIdx({ images: gzTruncated }), gzTruncated, /damaged gzip data/);
  const header = write('header', good.subarray(0, 9));
  await rejectsWithFile(data.loadIdx({ images: header }), header, /shorter than its 16-byte IDX header/);
  const trailing = write('trailing', Buffer.concat([good, Buffer.from([0])]));
  await rejectsWithFile(data.loadIdx({ images: trailing }), trailing, /1 unexpected bytes after/);
  await rejectsWithFile(data.loadIdx({ images: labels }), labels, /wrong magic number 0x00000801, expected 0x00000803/);
  const wrongType = write('float', Buffer.concat([Buffer.from([0, 0, 0x0d, 3]), good.subarray(4)]));
  await rejectsWithFile(data.loadIdx({ images: wrongType }), wrongType, /wrong magic number 0x00000d03/);
  const fewer = write('fewer-labels', idx(1, [3], [1, 2, 3]));
  await rejectsWithFile(data.loadIdx({ images, labels: fewer }), fewer, new RegExp(`holds 3 labels but ${images} holds 4 images`));
  const outOfRange = write('bad-label', idx(1, [4], [1, 2, 10, 4]));
  await rejectsWithFile(data.loadIdx({ images, labels: outOfRange }), outOfRange, /label 10 of sample 2 is outside \[0, 10\)/);
  await rejectsWithFile(data.loadFashionMnist(dir, { split: 'test' }), join(dir, 't10k-images-idx3-ubyte.gz'),
    /file not found \(also tried .*t10k-images-idx3-ubyte\)/);
});

const FASHION = '/usr/share/datasets/fashion-mnist';
test('IDX: the real Fashion-MNIST test split', async () => {
  if (!existsSync(join(FASHION, 't10k-images-idx3-ubyte.gz'))) {
    console.log(`  (skipped: ${FASHION} not installed)`);
    return;
  }
  const ds = await data.loadFashionMnist(FASHION, { split: 'test' });
  assert.equal([ds.n, ds.height, ds.width, ds.channels], [10000, 28, 28, 1]);
  assert.equal(Array.from(ds.labels.subarray(0, 10)), [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
  const counts = new Array(10).fill(0);
  for (const label of ds.labels) counts[label]++;
  assert.equal(counts, new Array(10).fill(1000));
  let first = 0;
  for (let i = 0; i < 784; i++) first += ds.images[i];
  assert.is(first, 33456);
});

// ---------------------------------------------------------------- CIFAR

// Pixel of record r, channel c, row y, column x in the fakes.
const cifarValue = (r, c, y, x) => (r * 7 + c * 50 + y * 3 + x) & 255;

function cifarRecords(count, labelBytesOf, first = 0) {
  const records = [];
  for (let r = first; r < first + count; r++) {
    const planes = new Uint8Array(3072);
    for (let c = 0; c < 3; c++) for (let y = 0; y < 32; y++) for (let x = 0; x < 32; x++) planes[c * 1024 + y * 32 + x] = cifarValue(r, c, y, x);
    records.push(Buffer.from(labelBytesOf(r)), Buffer.from(planes));
  }
  return Buffer.concat(records);
}

function checkCifarPixels(ds, records) {
  for (const r of records) {
    for (const [c, y, x] of [[0, 0, 0], [1, 5, 31], [2, 31, 7], [0, 17, 23]]) {
      assert.is(ds.images[r * 3072 + (y * 32 + x) * 3 + c], cifarValue(r, c, y, x), `record ${r} (${c},${y},${x})`);
    }
  }
}

test('CIFAR-10: batches load NHWC with labels; damage names the file', async () => {
  const root = freshDir('cifar10');
  const dir = join(root, 'cifar-10-batches-bin');
  mkdirSync(dir);
  for (let b = 1; b <= 5; b++) writeFileSync(join(dir, `data_batch_${b}.bin`), cifarRecords(2, (r) => [r % 10], (b - 1) * 2));
  writeFileSync(join(dir, 'test_batch.bin'), cifarRecords(3, (r) => [9 - r]));
  writeFileSync(join(dir, 'batches.meta.txt'), 'airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n');
  const train = await data.loadCifar10(root);
  assert.equal([train.n, train.height, train.width, train.channels, train.classes], [10, 32, 32, 3, 10]);
  assert.equal(Array.from(train.labels), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  checkCifarPixels(train, [0, 3, 9]);
  assert.is(train.classNames[9], 'truck');
  const testSplit = await data.loadCifar10(dir, { split: 'test' });
  assert.equal(Array.from(testSplit.labels), [9, 8, 7]);

  const truncated = join(dir, 'data_batch_3.bin');
  writeFileSync(truncated, cifarRecords(2, () => [1]).subarray(0, 3073 + 100));
  await rejectsWithFile(data.loadCifar10(dir), truncated, /not a whole number of 3073-byte records \(1 records and 100 bytes left over\)/);
  writeFileSync(truncated, cifarRecords(2, (r) => [r === 1 ? 10 : 0]));
  await rejectsWithFile(data.loadCifar10(dir), truncated, /label 10 of record 1 is outside \[0, 10\)/);
  rmSync(truncated);
  await rejectsWithFile(data.loadCifar10(dir), truncated, /file not found/);
});

test('CIFAR-100: fine and coarse labels; out-of-range labels name the file', async () => {
  const dir = freshDir('cifar100');
  writeFileSync(join(dir, 'train.bin'), cifarRecords(4, (r) => [r * 5, 99 - r]));
  const fine = await data.loadCifar100(dir);
  assert.equal([fine.n, fine.classes], [4, 100]);
  assert.equal(Array.from(fine.labels), [99, 98, 97, 96]);
  checkCifarPixels(fine, [0, 3]);
  const coarse = await data.loadCifar100(dir, { labels: 'coarse' });
  assert.equal([coarse.classes, ...coarse.labels], [20, 0, 5, 10, 15]);
  writeFileSync(join(dir, 'test.bin'), cifarRecords(2, () => [20, 3]));
  await rejectsWithFile(data.loadCifar100(dir, { split: 'test', labels: 'coarse' }), join(dir, 'test.bin'), /label 20 of record 0 is outside \[0, 20\)/);
  writeFileSync(join(dir, 'test.bin'), cifarRecords(2, () => [2, 3]).subarray(1));
  await rejectsWithFile(data.loadCifar100(dir, { split: 'test' }), join(dir, 'test.bin'), /3074-byte records/);
});

// ---------------------------------------------------------------- STL-10


test('STL-10: column-major planes become NHWC, labels 1..10 become 0..9, limit, damage', async () => {
  const root = freshDir('stl');
  const dir = join(root, 'stl10_binary');
  mkdirSync(dir);
  writeFileSync(join(dir, 'train_X.bin'), stlImages(3));
  writeFileSync(join(dir, 'train_y.bin'), Uint8Array.from([1, 10, 4]));
  writeFileSync(join(dir, 'unlabeled_X.bin'), stlImages(4));
  const train = await data.loadStl10(root);
  assert.equal([train.n, train.height, train.width, train.channels, train.classes], [3, 96, 96, 3, 10]);
  assert.equal(Array.from(train.labels), [0, 9, 3]);
  for (const [i, c, y, x] of [[0, 0, 0, 1], [1, 2, 95, 3], [2, 1, 40, 77], [2, 0, 1, 0]]) {
    assert.is(train.images[i * 27648 + (y * 96 + x) * 3 + c], stlValue(i, c, y, x), `image ${i} (${c},${y},${x})`);
  }
  const unlabeled = await data.loadStl10(root, { split: 'unlabeled', limit: 2 });
  assert.equal([unlabeled.n, unlabeled.labels], [2, undefined]);
  assert.is(unlabeled.images[27648 + (5 * 96 + 6) * 3 + 1], stlValue(1, 1, 5, 6));
  // train, then unlabeled, without labels; a limit may end inside the second file.
  const both = await data.loadStl10(root, { split: 'train+unlabeled' });
  assert.equal([both.n, both.labels, both.name], [7, undefined, 'stl10/train+unlabeled']);
  assert.equal(both.images.subarray(0, 3 * 27648), train.images);
  assert.equal(both.images.subarray(3 * 27648), (await data.loadStl10(root, { split: 'unlabeled' })).images);
  assert.equal((await data.loadStl10(root, { split: 'train+unlabeled', limit: 4 })).images, both.images.subarray(0, 4 * 27648));

  writeFileSync(join(dir, 'train_y.bin'), Uint8Array.from([1, 11, 4]));
  await rejectsWithFile(data.loadStl10(dir), join(dir, 'train_y.bin'), /label 11 of image 1 is outside 1\.\.10/);
  writeFileSync(join(dir, 'train_y.bin'), Uint8Array.from([1, 2]));
  await rejectsWithFile(data.loadStl10(dir), join(dir, 'train_y.bin'), /holds 2 labels but .*train_X\.bin holds 3 images/);
  writeFileSync(join(dir, 'train_X.bin'), stlImages(2).subarray(5));
  await rejectsWithFile(data.loadStl10(dir), join(dir, 'train_X.bin'), /27648-byte 3x96x96 images \(27643 bytes left over\)/);
  await rejectsWithFile(data.loadStl10(dir, { split: 'test' }), join(dir, 'test_X.bin'), /file not found/);
});

// ---------------------------------------------------------------- image folders

test('image folders: classes from sorted folder names, exact PNG pixels, resize, damage', async () => {
  const sharp = require('sharp');
  const root = freshDir('folder');
  const pixelsOf = (k) => Uint8Array.from({ length: 6 * 5 * 3 }, (_, i) => (i * 13 + k * 31) & 255);
  const classes = ['dog', 'cat', 'bird'];
  for (const [k, name] of classes.entries()) {
    mkdirSync(join(root, name));
    for (let j = 0; j < 2; j++) {
      await sharp(Buffer.from(pixelsOf(k * 2 + j)), { raw: { width: 5, height: 6, channels: 3 } }).png()
        .toFile(join(root, name, `img${j}.png`));
    }
  }
  writeFileSync(join(root, 'cat', 'notes.txt'), 'not an image');
  const ds = await data.loadImageFolder(root);
  assert.equal(ds.classNames, ['bird', 'cat', 'dog']);
  assert.equal([ds.n, ds.height, ds.width, ds.channels, ds.classes], [6, 6, 5, 3, 3]);
  assert.equal(Array.from(ds.labels), [0, 0, 1, 1, 2, 2]);
  assert.equal(ds.files, ['bird', 'bird', 'cat', 'cat', 'dog', 'dog'].map((c, i) => join(root, c, `img${i % 2}.png`)));
  assert.equal(data.subset(ds, [5, 0]).files, [join(root, 'dog', 'img1.png'), join(root, 'bird', 'img0.png')]);
  // bird (k = 2) img1 is sample 1; PNG is lossless.
  assert.equal(Array.from(ds.images.subarray(90, 180)), Array.from(pixelsOf(2 * 2 + 1)));
  const small = await data.loadImageFolder(root, { size: [4, 3], channels: 1 });
  assert.equal([small.height, small.width, small.channels, small.images.length], [4, 3, 1, 6 * 12]);

  await sharp({ create: { width: 7, height: 6, channels: 3, background: { r: 1, g: 2, b: 3 } } }).png()
    .toFile(join(root, 'dog', 'wide.png'));
  await rejectsWithFile(data.loadImageFolder(root), join(root, 'dog', 'wide.png'), /is 6x7 \(height x width\) but .* is 6x5; pass the size option/);
  const resized = await data.loadImageFolder(root, { size: 8 });
  assert.equal([resized.n, resized.height, resized.width], [7, 8, 8]);
  rmSync(join(root, 'dog', 'wide.png'));

  writeFileSync(join(root, 'cat', 'broken.png'), Buffer.from('\x89PNG\r\n\x1a\n this is not really a png'));
  await rejectsWithFile(data.loadImageFolder(root), join(root, 'cat', 'broken.png'), /cannot decode image/);
  rmSync(join(root, 'cat', 'broken.png'));
  mkdirSync(join(root, 'empty'));
  await rejectsWithFile(data.loadImageFolder(root), join(root, 'empty'), /class folder has no images/);
  await rejectsWithFile(data.loadImageFolder(join(root, 'nowhere')), join(root, 'nowhere'), /folder not found/);
  // Images directly in the root: an unlabeled set.
  const flat = await data.loadImageFolder(join(root, 'dog'));
  assert.equal([flat.n, flat.labels], [2, undefined]);
});

test('PNG fast path: decodePng gives sharp\'s pixels for the files it takes, declines the rest; all five row filters', async () => {
  const sharp = require('sharp');
  const { decodePng, pngChunk: chunk } = require('../dist/data/png.js');
  const W = 23;
  const H = 17;
  const bytes = (c, salt = 0) => Buffer.from(Uint8Array.from({ length: W * H * c }, (_, i) => (i * 37 + (i % 11) * 19 + salt) & 255));
  const raw = (c) => ({ raw: { width: W, height: H, channels: c } });
  const files = {
    gray: sharp(bytes(1), raw(1)).toColourspace('b-w').png(), // colour type 0
    grayAlpha: sharp(bytes(2), raw(2)).toColourspace('b-w').png(), // colour type 4
    grayAsRgb: sharp(bytes(1), raw(1)).png(), // sharp writes a 1-channel image as RGB (type 2)
    rgb: sharp(bytes(3), raw(3)).png({ compressionLevel: 9, adaptiveFiltering: true }),
    rgba: sharp(bytes(4), raw(4)).png(),
    palette: sharp(bytes(3), raw(3)).png({ palette: true, colours: 256, dither: 0 }),
    paletteAlpha: sharp(bytes(4, 5), raw(4)).png({ palette: true, colours: 256, dither: 0 }),
    interlaced: sharp(bytes(3), raw(3)).png({ progressive: true }),
    deep: sharp(bytes(1), raw(1)).toColourspace('grey16').png(),
    lowPalette: sharp(bytes(3), raw(3)).png({ palette: true, colours: 4 }),
    profile: sharp(bytes(3), raw(3)).withIccProfile('p3').png(),
  };
  const sharpPixels = async (buffer, channels, size) => {
    let p = sharp(buffer, { failOn: 'error' });
    p = channels === 1 ? p.grayscale() : p.toColourspace('srgb');
    p = p.removeAlpha();
    if (size) p = p.resize(size[1], size[0], { fit: 'cover', position: 'centre' });
    return p.raw().toBuffer();
  };
  const taken = [];
  for (const [name, pipeline] of Object.entries(files)) {
    const buffer = await pipeline.toBuffer();
    for (const channels of [1, 3]) {
      const fast = decodePng(buffer, channels);
      if (fast) {
        taken.push(`${name}/${channels}`);
        assert.equal([fast.width, fast.height], [W, H]);
        assert.ok(Buffer.from(fast.data).equals(await sharpPixels(buffer, channels)), `${name} in ${channels} channels`);
        // A resize to the image's own size is no resize: what the folder loader relies on.
        assert.ok(Buffer.from(fast.data).equals(await sharpPixels(buffer, channels, [H, W])), `${name} at its own size`);
      }
    }
  }
  assert.equal(taken, ['gray/1', 'gray/3', 'grayAlpha/1', 'grayAlpha/3', 'grayAsRgb/3', 'rgb/3', 'rgba/3', 'palette/3', 'paletteAlpha/3']);

  // Rows with filters 0..4 in turn (our own encoder), decoded by decodePng and by sharp alike.
  const pixels = bytes(3, 9);
  const stride = W * 3;
  const filtered = Buffer.alloc((stride + 1) * H);
  const at = (y, x) => (y < 0 || x < 0 ? 0 : pixels[y * stride + x]);
  const paeth = (a, b, c) => {
    const p = a + b - c;
    const [pa, pb, pc] = [Math.abs(p - a), Math.abs(p - b), Math.abs(p - c)];
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
  };
  for (let y = 0; y < H; y++) {
    const f = y % 5;
    filtered[y * (stride + 1)] = f;
    for (let x = 0; x < stride; x++) {
      const predictor = [0, at(y, x - 3), at(y - 1, x), (at(y, x - 3) + at(y - 1, x)) >> 1, paeth(at(y, x - 3), at(y - 1, x), at(y - 1, x - 3))][f];
      filtered[y * (stride + 1) + 1 + x] = (pixels[y * stride + x] - predictor) & 255;
    }
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(W, 0);
  header.writeUInt32BE(H, 4);
  header[8] = 8;
  header[9] = 2;
  const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]), chunk('IHDR', header),
    chunk('IDAT', deflateSync(filtered)), chunk('IEND', Buffer.alloc(0))]);
  assert.equal(decodePng(png, 3).data, new Uint8Array(pixels));
  assert.ok((await sharpPixels(png, 3)).equals(pixels), 'sharp reads the test file the same');
  // Damage: a flipped byte fails the chunk CRC, a cut file has no IEND; sharp then words the error.
  const flipped = Buffer.from(png);
  flipped[png.length - 20] ^= 1;
  assert.is(decodePng(flipped, 3), null);
  assert.is(decodePng(png.subarray(0, png.length - 12), 3), null);
  assert.is(decodePng(Buffer.from('not a png at all'), 3), null);
});

test('JPEG fast path: the addon\'s libjpeg decoder gives sharp\'s pixels for the files it takes, declines the rest', async () => {
  const sharp = require('sharp');
  if (typeof native.decodeJpeg !== 'function') {
    console.log('  (addon built without libjpeg: JPEGs go through sharp; nothing to compare)');
    return;
  }
  const W = 45;
  const H = 31; // odd sides: partial MCUs at the edges
  const smooth = (c) => Buffer.from(Uint8Array.from({ length: W * H * c }, (_, i) => {
    const p = Math.floor(i / c);
    return 128 + Math.round(90 * Math.sin((p % W) / 5 + (i % c)) * Math.cos(Math.floor(p / W) / 4));
  }));
  const raw = (c) => ({ raw: { width: W, height: H, channels: c } });
  const files = {
    q90: sharp(smooth(3), raw(3)).jpeg({ quality: 90 }),
    q40: sharp(smooth(3), raw(3)).jpeg({ quality: 40 }),
    chroma444: sharp(smooth(3), raw(3)).jpeg({ chromaSubsampling: '4:4:4' }),
    progressive: sharp(smooth(3), raw(3)).jpeg({ progressive: true }),
    mozjpeg: sharp(smooth(3), raw(3)).jpeg({ mozjpeg: true }),
    gray: sharp(smooth(1), raw(1)).toColourspace('b-w').jpeg(),
    cmyk: sharp(smooth(3), raw(3)).toColourspace('cmyk').jpeg(),
    profile: sharp(smooth(3), raw(3)).withIccProfile('p3').jpeg(),
  };
  const sharpPixels = async (buffer, channels) => {
    let p = sharp(buffer, { failOn: 'error' });
    p = channels === 1 ? p.grayscale() : p.toColourspace('srgb');
    return p.removeAlpha().raw().toBuffer();
  };
  const taken = [];
  for (const [name, pipeline] of Object.entries(files)) {
    const buffer = await pipeline.toBuffer();
    for (const channels of [1, 3]) {
      const fast = await native.decodeJpeg(buffer, channels);
      if (!fast) continue;
      taken.push(`${name}/${channels}`);
      assert.equal([fast.width, fast.height], [W, H]);
      assert.ok(Buffer.from(fast.data).equals(await sharpPixels(buffer, channels)), `${name} in ${channels} channels`);
    }
    // Truncated: libjpeg warns, the file goes to sharp (which reports it).
    assert.is(await native.decodeJpeg(buffer.subarray(0, buffer.length >> 1), 3), null, `${name} truncated`);
  }
  assert.equal(taken, ['q90/3', 'q40/3', 'chroma444/3', 'progressive/3', 'mozjpeg/3', 'gray/1', 'gray/3']);
  assert.is(await native.decodeJpeg(new Uint8Array([0xFF, 0xD8, 0xFF, 0xE0]), 3), null);

  // Through a folder: the fast path and sharp (a resize) both in one dataset, both as sharp decodes.
  const root = freshDir('jpeg');
  for (const [i, name] of ['q90', 'chroma444', 'gray'].entries()) writeFileSync(join(root, `${i}.jpg`), await files[name].toBuffer());
  const ds = await data.loadImageFolder(root);
  for (let i = 0; i < 3; i++) {
    const expected = await sharpPixels(join(root, `${i}.jpg`), 3);
    assert.ok(Buffer.from(ds.images.subarray(i * W * H * 3, (i + 1) * W * H * 3)).equals(expected), `sample ${i}`);
  }
});

// Reference resize: every output pixel as one 2-D weighted sum in doubles (the native one is
// separable, in float): scale to cover, centre box, triangle filter of radius max(1, scale).
function referenceResizeCover(src, h, w, c, outH, outW) {
  const scale = Math.max(outH / h, outW / w);
  const taps = (inLen, outLen, box) => Array.from({ length: outLen }, (_, i) => {
    const step = box / outLen;
    const centre = (inLen - box) / 2 + (i + 0.5) * step;
    const radius = Math.max(1, step);
    const weights = [];
    for (let x = 0; x < inLen; x++) {
      const d = Math.abs(x + 0.5 - centre) / radius;
      if (d < 1) weights.push([x, 1 - d]);
    }
    const sum = weights.reduce((t, [, v]) => t + v, 0);
    return weights.map(([x, v]) => [x, v / sum]);
  });
  const ys = taps(h, outH, outH / scale);
  const xs = taps(w, outW, outW / scale);
  const out = new Uint8Array(outH * outW * c);
  for (let y = 0; y < outH; y++) for (let x = 0; x < outW; x++) for (let ch = 0; ch < c; ch++) {
    let v = 0;
    for (const [sy, wy] of ys[y]) for (const [sx, wx] of xs[x]) v += wy * wx * src[(sy * w + sx) * c + ch];
    out[(y * outW + x) * c + ch] = Math.min(255, Math.max(0, Math.round(v)));
  }
  return out;
}

test('resizeCover: cover + centre crop with an antialiased triangle filter; folders resize every format with it', async () => {
  const sharp = require('sharp');
  const pattern = (h, w, c) => Uint8Array.from({ length: h * w * c }, (_, i) => {
    const p = Math.floor(i / c);
    return (Math.floor(p / w) * 37 + (p % w) * 11 + (i % c) * 70 + ((p * 7919) % 13) * 9) & 255;
  });
  for (const [h, w, c, oh, ow] of [[40, 60, 3, 16, 16], [17, 23, 1, 32, 20], [50, 30, 3, 12, 30], [9, 9, 3, 9, 9], [64, 48, 1, 7, 5]]) {
    const src = pattern(h, w, c);
    const got = await native.resizeCover(src, h, w, c, oh, ow);
    const want = referenceResizeCover(src, h, w, c, oh, ow);
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
    assert.ok(worst <= 1, `${h}x${w}x${c} -> ${oh}x${ow}: off by ${worst}`);
    if (h === oh && w === ow) assert.equal(got, src, 'its own size: unchanged');
  }
  assert.equal(await native.resizeCover(new Uint8Array(30 * 20).fill(77), 30, 20, 1, 8, 13), new Uint8Array(8 * 13).fill(77));
  assert.throws(() => native.resizeCover(new Uint8Array(5), 2, 2, 1, 1, 1), /Expected Uint8Array of height\*width\*channels = 4 bytes for pixels/);

  // A folder resized to 12x12: a PNG (own decoder), a WebP (sharp) and, with libjpeg, a JPEG
  // decoded at 1/2 by DCT scaling (so compared loosely with the full-size reference).
  const root = freshDir('resize');
  const src = pattern(30, 40, 3);
  const raw = { raw: { width: 40, height: 30, channels: 3 } };
  await sharp(Buffer.from(src), raw).png().toFile(join(root, 'a.png'));
  await sharp(Buffer.from(src), raw).webp({ lossless: true }).toFile(join(root, 'b.webp'));
  await sharp(Buffer.from(src), raw).jpeg({ quality: 95 }).toFile(join(root, 'c.jpg'));
  const ds = await data.loadImageFolder(root, { size: 12 });
  const want = referenceResizeCover(src, 30, 40, 3, 12, 12);
  const sample = (i) => ds.images.subarray(i * 432, (i + 1) * 432);
  for (const i of [0, 1]) {
    assert.ok(sample(i).every((v, k) => Math.abs(v - want[k]) <= 1), `sample ${i} is the reference resize`);
  }
  const meanError = sample(2).reduce((t, v, k) => t + Math.abs(v - want[k]), 0) / 432;
  assert.ok(meanError < 8, `JPEG at 1/2 then resized: mean error ${meanError}`);
  assert.equal(await data.readSamples(await data.openImageFolder(root, { size: 12 }), [0, 1, 2]), ds.images);
});

test('streaming folders: openImageFolder reads the pixels loadImageFolder holds; subsets, damage at read time', async () => {
  const sharp = require('sharp');
  const root = freshDir('stream');
  const pixelsOf = (k) => Uint8Array.from({ length: 7 * 6 * 3 }, (_, i) => (i * 29 + k * 17) & 255);
  for (const [k, name] of ['b', 'a'].entries()) {
    mkdirSync(join(root, name));
    for (let j = 0; j < 3; j++) {
      await sharp(Buffer.from(pixelsOf(k * 3 + j)), { raw: { width: 6, height: 7, channels: 3 } }).png()
        .toFile(join(root, name, `${j}.png`));
    }
  }
  for (const options of [{}, { size: [5, 4], channels: 1 }, { size: 9, concurrency: 1 }]) {
    const memory = await data.loadImageFolder(root, options);
    const stream = await data.openImageFolder(root, options);
    assert.is(stream.images, undefined, 'no pixels held');
    assert.ok(data.isStreaming(stream) && !data.isStreaming(memory));
    for (const key of ['name', 'n', 'height', 'width', 'channels', 'classes', 'classNames', 'files']) {
      assert.equal(stream[key], memory[key], key);
    }
    assert.equal(stream.labels, memory.labels);
    const order = [5, 0, 3, 3, 1];
    assert.equal(await stream.read(order), await data.readSamples(memory, order), JSON.stringify(options));
    assert.equal(await data.readRange(stream, 0, stream.n), memory.images);
    assert.equal(await data.inMemory(stream), memory);
    // A subset of a stream streams, through its own indices.
    const part = data.subset(stream, [4, 1], 'part');
    assert.ok(data.isStreaming(part));
    assert.equal([part.n, [...part.labels], part.files], [2, [memory.labels[4], memory.labels[1]], [memory.files[4], memory.files[1]]]);
    assert.equal(await part.read([1, 0]), await data.readSamples(memory, [1, 4]));
    await rejectsMessage(part.read([2]), RangeError, /Expected indices\[0\] between 0 and 1 but received 2/);
  }
  const stream = await data.openImageFolder(root);
  await rejectsMessage(stream.read([0, 6]), RangeError, /Expected indices\[1\] between 0 and 5 but received 6/);
  // Damage after opening is found by the read that needs the file, and named.
  writeFileSync(join(root, 'b', '1.png'), Buffer.from('\x89PNG\r\n\x1a\n truncated'));
  await rejectsWithFile(stream.read([0, 4]), join(root, 'b', '1.png'), /cannot decode image/);
  assert.equal((await stream.read([0])).length, 7 * 6 * 3, 'other samples still read');
  await sharp({ create: { width: 6, height: 8, channels: 3, background: { r: 1, g: 2, b: 3 } } }).png()
    .toFile(join(root, 'b', '1.png'));
  await rejectsWithFile(stream.read([4]), join(root, 'b', '1.png'), /is 8x6 \(height x width\) but .* is 7x6; pass the size option/);
  rmSync(join(root, 'b', '1.png'));
  // A folder above maxBytes (default: half the memory) is refused by the in-memory loader, pointing to streaming.
  await rejectsWithFile(data.loadImageFolder(root, { maxBytes: 5 * 126 - 1 }), root,
    /5 images of 7x6x3 take 630 bytes decoded, more than maxBytes 629 bytes; stream them instead \(openImageFolder, data\.stream: true, --data-stream\)/);
  assert.is((await data.loadImageFolder(root, { maxBytes: 630 })).n, 5);
  // Where memory is needed, a stream is refused by name.
  assert.throws(() => data.validateDataset(stream), /Expected dataset in memory but received a StreamingDataset \(folder:.*\); read it whole with inMemory\(\)/);
  assert.is(data.validateDataset(stream, 'data', true), stream);
});

// ---------------------------------------------------------------- synthetic

test('synthetic: deterministic, labelled, in range', () => {
  const a = data.syntheticDataset({ n: 64, height: 12, width: 10, seed: 3 });
  const b = data.syntheticDataset({ n: 64, height: 12, width: 10, seed: 3 });
  const c = data.syntheticDataset({ n: 64, height: 12, width: 10, seed: 4 });
  assert.equal([a.n, a.height, a.width, a.channels, a.classes, a.images.length], [64, 12, 10, 3, 10, 64 * 360]);
  assert.equal(a.images, b.images);
  assert.equal(a.labels, b.labels);
  assert.not.equal(a.images, c.images);
  assert.ok(a.labels.every((l) => l >= 0 && l < 10));
  assert.ok(new Set(a.labels).size >= 8, 'most classes appear in 64 samples');
  const gray = data.syntheticDataset({ n: 4, channels: 1, classes: 2 });
  assert.is(gray.images.length, 4 * 32 * 32);
  data.validateDataset(gray);
});

// ---------------------------------------------------------------- loader

async function collect(iterable) {
  const out = [];
  for await (const item of iterable) out.push(item);
  return out;
}

test('loader: seeded order per epoch, a permutation; drop-last; labels follow indices', async () => {
  const ds = data.syntheticDataset({ n: 23, height: 4, width: 4, seed: 1 });
  const loader = new data.DataLoader(ds, { batchSize: 5, seed: 42 });
  assert.is(loader.batchesPerEpoch, 5);
  assert.equal(loader.order(3), new data.DataLoader(ds, { batchSize: 7, seed: 42 }).order(3));
  assert.not.equal(loader.order(3), loader.order(4));
  assert.not.equal(loader.order(3), new data.DataLoader(ds, { batchSize: 5, seed: 43 }).order(3));
  assert.equal([...loader.order(3)].sort((x, y) => x - y), [...Array(23).keys()]);
  const batches = await collect(loader.epoch(3));
  assert.equal(batches.map((b) => b.n), [5, 5, 5, 5, 3]);
  assert.equal(batches.flatMap((b) => [...b.indices]), [...loader.order(3)]);
  for (const b of batches) {
    for (let i = 0; i < b.n; i++) {
      assert.is(b.labels[i], ds.labels[b.indices[i]]);
      assert.equal(b.images.subarray(i * 48, (i + 1) * 48), ds.images.subarray(b.indices[i] * 48, (b.indices[i] + 1) * 48));
    }
  }
  const dropped = new data.DataLoader(ds, { batchSize: 5, seed: 42, dropLast: true });
  assert.equal((await collect(dropped.epoch(3))).map((b) => b.n), [5, 5, 5, 5]);
  const ordered = new data.DataLoader(ds, { batchSize: 10, shuffle: false });
  assert.equal([...(await collect(ordered.epoch(0)))[1].indices], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
});

test('loader: options are validated', () => {
  const ds = data.syntheticDataset({ n: 4, height: 4, width: 4 });
  assert.throws(() => new data.DataLoader(ds, { batchSize: 0 }), /Expected integer between 1 and 1048576 for options\.batchSize but received 0/);
  assert.throws(() => new data.DataLoader(ds, { batchSize: 2, prefetch: 9 }), /options\.prefetch/);
  assert.throws(() => new data.DataLoader(ds, { batchSize: 2, shufle: true }), /Unknown option options\.shufle/);
  assert.throws(() => new data.DataLoader(ds, { batchSize: 2, augment: [augmentConfig({ preset: 'grayscale' })] }),
    /mean with 3 entries for 3-channel images/);
  assert.throws(() => new data.DataLoader({ ...ds, images: new Uint8Array(3) }, { batchSize: 2 }), /dataset\.images/);
  try {
    new data.DataLoader(ds, { batchSize: 2, seed: -3 });
    assert.unreachable();
  } catch (error) {
    assert.instance(error, ByolOptionError);
  }
});

// Polls cond every 5 ms for up to 10 s: for effects of native work that finishes on its own time.
async function waitFor(cond, ms = 10000) {
  for (const end = Date.now() + ms; !cond(); ) {
    if (Date.now() > end) return false;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return true;
}

test('loader: views equal augmentBatch with (seed, epoch, dataset index, view); prefetch runs ahead', async () => {
  const ds = data.syntheticDataset({ n: 12, height: 20, width: 20, seed: 2 });
  // Record which samples have been gathered, to see the prefetch happen.
  const gathered = [];
  const images = new (class extends Uint8Array {
    subarray(begin, end) {
      gathered.push(begin / 1200);
      return super.subarray(begin, end);
    }
  })(ds.images);
  const views = augmentPair({ preset: 'cifar', outputSize: 16 });
  const loader = new data.DataLoader({ ...ds, images }, { batchSize: 4, seed: 7, augment: views, prefetch: 1 });
  const baseline = native.tensorStats().handles;
  const iterator = loader.epoch(1);
  const first = (await iterator.next()).value;
  // Batch 1 is being prepared while the caller holds batch 0.
  assert.equal(gathered, [...loader.order(1).slice(0, 8)]);
  assert.is(first.views.length, 2);
  assert.equal(first.views[0].shape, [4, 3, 16, 16]);
  for (const [v, tensor] of first.views.entries()) {
    const direct = await augmentBatch(first.images, null, {
      config: views[v], seed: 7, epoch: 1, indices: first.indices, view: v + 1, shape: [4, 20, 20, 3],
    });
    assert.equal(await tensor.toArray(), await direct.images.toArray());
    direct.images.dispose();
  }
  data.disposeBatch(first);
  // The prefetched batch's two views come into being when its native augmentation finishes;
  // wait for them (a busy machine can take a while) so the check below frees something real.
  const handles = () => native.tensorStats().handles;
  assert.ok(await waitFor(() => handles() >= baseline + 2), `prefetched views never appeared (handles ${handles()})`);
  // Stop early: the prefetched batch's views must be freed by the loader.
  await iterator.return();
  assert.ok(await waitFor(() => handles() === baseline), `handles ${handles()}, expected ${baseline} after return()`);

  // The same loader over a streaming dataset yields the same batches and views.
  const streamed = { ...ds, images: undefined, read: async (indices) => data.readSamples(ds, indices) };
  const fromStream = await collect(new data.DataLoader(streamed, { batchSize: 5, seed: 7, augment: views }).epoch(2));
  const fromMemory = await collect(new data.DataLoader(ds, { batchSize: 5, seed: 7, augment: views }).epoch(2));
  assert.is(fromStream.length, 3);
  for (const [k, batch] of fromStream.entries()) {
    assert.equal([batch.images, batch.labels, batch.indices], [fromMemory[k].images, fromMemory[k].labels, fromMemory[k].indices]);
    for (let v = 0; v < 2; v++) assert.equal(await batch.views[v].toArray(), await fromMemory[k].views[v].toArray());
    data.disposeBatch(batch);
    data.disposeBatch(fromMemory[k]);
  }
  // batch(epoch, step) alone is that step of epoch() (what a resumed run starts from).
  const single = await new data.DataLoader(ds, { batchSize: 5, seed: 7, augment: views }).batch(2, 1);
  const whole = await collect(new data.DataLoader(ds, { batchSize: 5, seed: 7, augment: views }).epoch(2));
  assert.equal([single.indices, single.labels, single.step], [whole[1].indices, whole[1].labels, 1]);
  for (let v = 0; v < 2; v++) assert.equal(await single.views[v].toArray(), await whole[1].views[v].toArray());
  for (const batch of [single, ...whole]) data.disposeBatch(batch);
  assert.throws(() => new data.DataLoader(ds, { batchSize: 5 }).batch(0, 3), /Expected integer between 0 and 2 for step but received 3/);
  const short = { ...streamed, read: async (indices) => new Uint8Array(indices.length) };
  await rejectsMessage(collect(new data.DataLoader(short, { batchSize: 4 }).epoch(0)), TypeError,
    /read\(\) returned 4 bytes for 4 samples of 20x20x3 \(expected a Uint8Array of 4800\)/);

  gathered.length = 0;
  const lazy = new data.DataLoader({ ...ds, images }, { batchSize: 4, seed: 7, prefetch: 0 });
  const it = lazy.epoch(0);
  await it.next();
  assert.is(gathered.length, 4, 'prefetch 0 gathers only the batch asked for');
  await it.return();
});

test.after(() => rmSync(tmp, { recursive: true, force: true }));

test.run();
