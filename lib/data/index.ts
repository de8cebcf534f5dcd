// index.ts (data): datasets and the loader. Every loader returns a Dataset (uint8 NHWC images,
// optional int32 labels), openImageFolder a StreamingDataset (the same, read per batch);
// damaged files throw DatasetError naming the file.
export {
  type Dataset, type DatasetInfo, type DatasetLike, DatasetError, type StreamingDataset, centerCrop, inMemory, isStreaming, readRange,
  readSamples, subset, validateDataset,
} from './dataset';
export { type IdxArray, type IdxFiles, type MnistOptions, FASHION_MNIST_CLASSES, loadFashionMnist, loadIdx, loadMnist, readIdx } from './idx';
export { type Cifar100Options, type CifarOptions, loadCifar10, loadCifar100 } from './cifar';
export { type Stl10Options, loadStl10 } from './stl10';
export { DEFAULT_IMAGE_EXTENSIONS, type FolderOptions, loadImageFolder, openImageFolder } from './folder';
export { type SyntheticOptions, syntheticDataset } from './synthetic';
export { type Batch, DataLoader, type LoaderOptions, disposeBatch } from './loader';
export { Rng, permutation } from './random';
