# binding.gyp: builds byol.node = addon glue + backend-agnostic core + CPU backend (oneDNN).
# The CUDA backend is NOT here: CMakeLists.txt builds it as libbyol_cuda.so, loaded at run time.
# Sources are globbed so that adding a file to native/{core,cpu,addon} needs no edit here.
{
  "targets": [
    {
      "target_name": "byol",
      "sources": [
        "<!@(node -p \"require('fs').readdirSync('native/core').filter(f=>f.endsWith('.cc')).map(f=>'native/core/'+f).join(' ')\")",
        "<!@(node -p \"require('fs').readdirSync('native/cpu').filter(f=>f.endsWith('.cc')).map(f=>'native/cpu/'+f).join(' ')\")",
        "<!@(node -p \"require('fs').readdirSync('native/addon').filter(f=>f.endsWith('.cc')).map(f=>'native/addon/'+f).join(' ')\")"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native/include"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-fopenmp", "-fexceptions", "-frtti", "-Wall", "-Wno-unused-parameter"],
      "conditions": [
        ["OS=='linux'", {
          # RPATH, not RUNPATH (--disable-new-dtags): a prebuild ships libdnnl.so.2 and ITS
          # dependencies (libOpenCL.so.1, libgomp.so.1) beside byol.node, and only DT_RPATH is
          # also searched for the dependencies of libraries that byol.node loads.
          "ldflags": ["-fopenmp", "-Wl,--disable-new-dtags", "-Wl,-rpath,'$$ORIGIN'"],
          "libraries": ["-ldnnl", "-ldl"],
          "conditions": [
            # libjpeg(-turbo) when its header is there (Debian: libjpeg-dev): the JPEG fast path
            # of image folders (native/addon/image.cc); without it JPEGs go through sharp.
            # The test prints the string '1' or '0': `node -p` would colour a number when FORCE_COLOR is set.
            ["<!(node -p \"require('fs').existsSync('/usr/include/jpeglib.h') ? '1' : '0'\")==1", {
              "defines": ["BYOL_WITH_JPEG"],
              "libraries": ["-ljpeg"]
            }]
          ]
        }],
        # macOS (untested; .github/workflows/release.yml): oneDNN 2.x built from source into
        # BYOL_ONEDNN_ROOT and Homebrew's libomp (Apple clang has no OpenMP runtime of its own).
        ["OS=='mac'", {
          "include_dirs": [
            "<!(node -p \"(process.env.BYOL_ONEDNN_ROOT || '/usr/local') + '/include'\")",
            "<!(node -p \"(process.env.BYOL_OMP_ROOT || '/opt/homebrew/opt/libomp') + '/include'\")"
          ],
          "libraries": [
            "-L<!(node -p \"(process.env.BYOL_ONEDNN_ROOT || '/usr/local') + '/lib'\")",
            "-L<!(node -p \"(process.env.BYOL_OMP_ROOT || '/opt/homebrew/opt/libomp') + '/lib'\")",
            "-ldnnl", "-lomp"
          ],
          "xcode_settings": {
            "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
            "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
            "GCC_ENABLE_CPP_RTTI": "YES",
            "MACOSX_DEPLOYMENT_TARGET": "11.0",
            "OTHER_CPLUSPLUSFLAGS": ["-O3", "-Xpreprocessor", "-fopenmp", "-Wall", "-Wno-unused-parameter"],
            "OTHER_LDFLAGS": ["-Wl,-rpath,@loader_path"]
          }
        }],
        # Windows (untested, and native/ does not compile there yet: see release.yml).
        ["OS=='win'", {
          "include_dirs": ["<!(node -p \"(process.env.BYOL_ONEDNN_ROOT || 'C:/onednn') + '/include'\")"],
          "libraries": ["<!(node -p \"(process.env.BYOL_ONEDNN_ROOT || 'C:/onednn') + '/lib/dnnl.lib'\")"],
          "msvs_settings": {
            "VCCLCompilerTool": {
              "AdditionalOptions": ["/std:c++17", "/O2", "/openmp:llvm"],
              "ExceptionHandling": 1,
              "RuntimeTypeInfo": "true"
            }
          }
        }]
      ]
    }
  ]
}
