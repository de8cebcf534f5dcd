// compute.cc: the one host thread that runs the CPU backend's work (RunOnComputeThread).
//
// Why one thread: libgomp keeps a pool of worker threads for every thread that opens a
// parallel region, and once the threads of all pools outnumber the CPUs it stops spinning at
// its barriers, so every one of the ~300 parallel regions of a step starts and ends through
// futex sleeps and wake-ups. When libuv ran each step, augmentation and download on whichever
// pool thread was free, each of its 4 threads grew a pool of its own: on 2 cores a step called
// from Node took 273 ms against 182 ms for the same step with one libuv thread (ResNet-18 width
// 0.125, batch 128 at 28x28; the native benchmark, one thread throughout, took 185 ms). With
// every OpenMP region on this thread (JS threads keep a count of 1, device.cc), one pool
// serves the whole process and stays warm.
//
// The AsyncWorker that hands a task here blocks its libuv thread until the task is done, so a
// promise still settles as before; tasks run one at a time, in the order they arrive, which
// also keeps a prefetched augmentation from competing with a step for the same cores.

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#ifdef __linux__
#include <pthread.h>
#endif

#include "../cpu/cpu_backend.h"
#include "addon.h"

namespace byol_addon {
namespace {

struct Job {
  const std::function<void()>* task;
  std::exception_ptr error;
  bool done = false;
};

struct ComputeQueue {
  std::mutex mutex;
  std::condition_variable work;  // a job was queued
  std::condition_variable done;  // a job finished
  std::deque<Job*> jobs;
};

thread_local bool t_on_compute_thread = false;

void Loop(ComputeQueue* queue) {
  t_on_compute_thread = true;
#ifdef __linux__
  // Shown by top -H, gdb and /proc/PID/task/*/comm; libgomp's workers inherit the name.
  pthread_setname_np(pthread_self(), "byol-compute");
#endif
  std::unique_lock<std::mutex> lock(queue->mutex);
  for (;;) {
    queue->work.wait(lock, [&] { return !queue->jobs.empty(); });
    Job* job = queue->jobs.front();
    queue->jobs.pop_front();
    lock.unlock();
    try {
      ApplyThreadSetting();
      (*job->task)();
    } catch (...) {
      job->error = std::current_exception();
    }
    lock.lock();
    job->done = true;
    queue->done.notify_all();
  }
}

// Started on first use and never stopped: it sleeps on its condition variable when idle, and
// the queue is never destroyed, so nothing is torn down under it at process exit.
ComputeQueue& Queue() {
  static ComputeQueue* queue = [] {
    auto* q = new ComputeQueue();
    std::thread(Loop, q).detach();
    return q;
  }();
  return *queue;
}

}  // namespace

void RunOnComputeThread(const std::function<void()>& task) {
  if (t_on_compute_thread) {  // nested: already here
    task();
    return;
  }
  ComputeQueue& queue = Queue();
  Job job{&task, nullptr};
  std::unique_lock<std::mutex> lock(queue.mutex);
  queue.jobs.push_back(&job);
  queue.work.notify_one();
  queue.done.wait(lock, [&] { return job.done; });
  lock.unlock();
  if (job.error) std::rethrow_exception(job.error);
}

void RunWhereDeviceComputes(const byol::Backend* backend, const std::function<void()>& task) {
  if (backend != nullptr && backend->type() == byol::DeviceType::cpu) {
    RunOnComputeThread(task);
    return;
  }
  // Here on a libuv thread: a CPU tensor read by GPU work is copied by the CPU backend, whose
  // copies open parallel regions; marked serial (a count of 1, which its ops keep), they start
  // no second pool.
  byol::cpu::set_thread_serial(true);
  task();
}

}  // namespace byol_addon
