// plugin.cc: finds, loads and version-checks libbyol_cuda.so at run time (byol/plugin.h).
// Contract: compiled into byol.node and byol_core, so it includes no CUDA header and needs
// only dlopen. A failed load throws byol::Error listing every path tried with why it failed,
// plus a hint for the detected cause (missing cuDNN/cuBLAS/CUDA runtime, stale build, ...).
#include "byol/plugin.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mutex>
#include <sstream>

namespace byol {
namespace {

constexpr const char* kLibraryName = "libbyol_cuda.so";

using ApiVersionFn = int (*)();
using CreateFn = Backend* (*)(int, char*, size_t);

struct LoadedPlugin {
  void* handle = nullptr;
  std::string path;
  CreateFn create = nullptr;
};

std::mutex g_mutex;
LoadedPlugin g_plugin;  // kept for the life of the process: backends run its code

bool is_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool is_dir(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string parent(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string join(const std::string& dir, const std::string& name) {
  return dir == "/" ? "/" + name : dir + "/" + name;
}

std::string canonical(const std::string& path) {
  char buf[PATH_MAX];
  return ::realpath(path.c_str(), buf) ? std::string(buf) : path;
}

// The folder of the binary holding this code: byol.node, the test runner, or a program that
// links byol_core. dladdr names shared objects; the main program comes back as "" or a bare
// name, so that case asks /proc/self/exe.
std::string module_dir() {
  Dl_info info;
  std::string file;
  if (::dladdr(reinterpret_cast<void*>(&module_dir), &info) && info.dli_fname &&
      std::string(info.dli_fname).find('/') != std::string::npos)
    file = info.dli_fname;
  if (file.empty()) {
    char buf[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    if (n > 0) file.assign(buf, static_cast<size_t>(n));
  }
  return file.empty() ? std::string() : parent(canonical(file));
}

// The npm package root: the closest ancestor (at most six levels up) holding package.json.
std::string package_root(const std::string& from) {
  std::string dir = from;
  for (int level = 0; level < 7 && !dir.empty(); ++level) {
    if (is_file(dir + "/package.json")) return dir;
    if (dir == "/") break;
    dir = parent(dir);
  }
  return std::string();
}

const char* platform_dir() {
#if defined(__x86_64__)
  return "linux-x64";
#elif defined(__aarch64__)
  return "linux-arm64";
#else
  return "linux-unknown";
#endif
}

// What the user can do about the failures seen, most specific first.
std::string hint_for(const std::vector<std::string>& tried, bool any_file_found) {
  auto seen = [&](const char* needle) {
    for (const std::string& t : tried)
      if (t.find(needle) != std::string::npos) return true;
    return false;
  };
  if (seen("libcudnn"))
    return "cuDNN 9 is missing: pip install nvidia-cudnn-cu13 (or install cuDNN 9 for CUDA 13), "
           "then add its lib folder to LD_LIBRARY_PATH, or rebuild the plugin (npm run build:cmake) "
           "so that it records where cuDNN is";
  if (seen("libcublas"))
    return "cuBLAS 13 is missing: pip install nvidia-cublas (CUDA 13 wheels) or install the CUDA 13 "
           "toolkit, then add its lib folder to LD_LIBRARY_PATH or rebuild the plugin (npm run build:cmake)";
  if (seen("libcudart"))
    return "the CUDA 13 runtime (libcudart.so.13) is missing: install the CUDA 13 toolkit or "
           "pip install nvidia-cuda-runtime (CUDA 13), and add its lib folder to LD_LIBRARY_PATH";
  if (seen("backend API"))
    return "libbyol_cuda.so was built from another version of byol: rebuild it (npm run build:cmake)";
  if (seen("undefined symbol"))
    return "libbyol_cuda.so does not match its libraries or this byol: rebuild it (npm run build:cmake)";
  if (seen("ELF"))
    return "a file named libbyol_cuda.so is not a library for this platform: rebuild it (npm run build:cmake)";
  if (!any_file_found)
    return "libbyol_cuda.so was not built: run npm run build:cmake on a machine with nvcc (CUDA 13), "
           "cuDNN 9 and cuBLAS (tools/setup.sh fetches the last two), or set BYOL_CUDA_LIBRARY to its path";
  return "set BYOL_CUDA_LIBRARY to the path of a working libbyol_cuda.so";
}

std::string tried_text(const std::vector<std::string>& tried) {
  std::ostringstream os;
  for (const std::string& t : tried) os << "\n  " << t;
  return os.str();
}

}  // namespace

std::vector<std::string> cuda_library_candidates() {
  std::vector<std::string> out;
  auto push = [&out](const std::string& path) {
    std::string p = path.find('/') != std::string::npos && is_file(path) ? canonical(path) : path;
    for (const std::string& q : out)
      if (q == p) return;
    out.push_back(p);
  };
  if (const char* env = std::getenv("BYOL_CUDA_LIBRARY")) {
    std::string p(env);
    if (!p.empty()) push(is_dir(p) ? join(p, kLibraryName) : p);
  }
  const std::string dir = module_dir();
  if (!dir.empty()) {
    push(join(dir, kLibraryName));
    // A plugin copied beside the addon wins; cmake builds put it at the top of the build
    // folder, above the test runner (build-x/native/tests/byol_tests).
    push(join(parent(dir), std::string("cmake/") + kLibraryName));
    std::string up = dir;
    for (int level = 0; level < 2 && up != "/"; ++level) {
      up = parent(up);
      push(join(up, kLibraryName));
    }
    const std::string root = package_root(dir);
    if (!root.empty()) {
      push(join(root, std::string("build-cmake/") + kLibraryName));  // npm run build:cmake
      push(join(root, std::string("build/cmake/") + kLibraryName));
      // The separate CUDA artifact (npm run prebuild:cuda stages it in packages/; published as
      // the optional package @byol/cuda-<platform>): in a checkout, nested under byol, or hoisted
      // into any node_modules folder above byol, as npm lays packages out.
      const std::string cuda_package = std::string("cuda-") + platform_dir();
      push(join(root, "packages/" + cuda_package + "/" + kLibraryName));
      push(join(root, "node_modules/@byol/" + cuda_package + "/" + kLibraryName));
      const std::string node_modules = "/node_modules";
      for (std::string ancestor = parent(root); ancestor != "/" && ancestor != ".";
           ancestor = parent(ancestor)) {
        if (ancestor.size() > node_modules.size() &&
            ancestor.compare(ancestor.size() - node_modules.size(), node_modules.size(), node_modules) == 0)
          push(join(ancestor, "@byol/" + cuda_package + "/" + kLibraryName));
      }
    }
  }
  push(kLibraryName);  // the dynamic loader's own search (LD_LIBRARY_PATH, ldconfig)
  return out;
}

std::unique_ptr<Backend> load_cuda_backend(int device, CudaLoadReport* report) {
  BYOL_CHECK(device >= 0, "load_cuda_backend: expected device >= 0 but received ", device);
  std::lock_guard<std::mutex> lock(g_mutex);
  std::vector<std::string> tried;
  bool any_file_found = false;

  if (g_plugin.handle == nullptr) {
    for (const std::string& path : cuda_library_candidates()) {
      const bool is_path = path.find('/') != std::string::npos;
      if (is_path && !is_file(path)) {
        tried.push_back(path + ": not found");
        continue;
      }
      any_file_found = any_file_found || is_path;
      ::dlerror();
      void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (handle == nullptr) {
        const char* why = ::dlerror();
        std::string text = why ? why : "dlopen failed";
        // A bare name that the loader cannot find says so; a file that exists and fails to
        // load names the dependency it lacks.
        if (!is_path && text.find(std::string(kLibraryName) + ": cannot open") != std::string::npos)
          text = "not found on the loader's search path (LD_LIBRARY_PATH, ldconfig)";
        else if (!is_path)
          any_file_found = true;
        tried.push_back(path + ": " + text);
        continue;
      }
      auto version = reinterpret_cast<ApiVersionFn>(::dlsym(handle, "byol_cuda_api_version"));
      auto create = reinterpret_cast<CreateFn>(::dlsym(handle, "byol_cuda_create"));
      if (version == nullptr || create == nullptr) {
        tried.push_back(path + ": not a byol CUDA plugin (no byol_cuda_api_version/byol_cuda_create)");
        ::dlclose(handle);
        continue;
      }
      const int found = version();
      if (found != kBackendApiVersion) {
        std::ostringstream os;
        os << path << ": built for backend API " << found << " but this byol needs backend API "
           << kBackendApiVersion;
        tried.push_back(os.str());
        ::dlclose(handle);
        continue;
      }
      Dl_info info;
      std::string loaded = path;
      if (::dladdr(reinterpret_cast<void*>(version), &info) && info.dli_fname) loaded = canonical(info.dli_fname);
      g_plugin.handle = handle;
      g_plugin.path = loaded;
      g_plugin.create = create;
      tried.push_back(loaded + ": loaded");
      break;
    }
  } else {
    tried.push_back(g_plugin.path + ": loaded (earlier)");
  }

  if (report) {
    report->tried = tried;
    report->loaded_path = g_plugin.path;
  }
  if (g_plugin.handle == nullptr) {
    std::ostringstream os;
    os << "cuda: could not load the CUDA backend library (" << kLibraryName << "); tried:"
       << tried_text(tried) << "\nhint: " << hint_for(tried, any_file_found);
    throw Error(os.str());
  }

  char err[4096] = {0};
  Backend* backend = g_plugin.create(device, err, sizeof(err));
  if (backend == nullptr) {
    // The library is fine; the machine is not (no driver, no GPU, bad index): that message
    // comes from the plugin and carries its own advice.
    std::ostringstream os;
    os << (err[0] ? err : "cuda: byol_cuda_create failed without a message") << "\n(loaded "
       << g_plugin.path << " for device " << device << ")";
    throw Error(os.str());
  }
  return std::unique_ptr<Backend>(backend);
}

}  // namespace byol
