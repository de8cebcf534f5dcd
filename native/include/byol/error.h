// error.h: the one exception type of the core and the check macro that throws it.
// Contract: native code never exits or aborts on bad input; it throws byol::Error with
// file:line and a message naming the parameter, what was expected and what was found.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace byol {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
inline void format_into(std::ostringstream&) {}
template <typename T, typename... Rest>
void format_into(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  format_into(os, rest...);
}
template <typename... Args>
[[noreturn]] void throw_error(const char* file, int line, const Args&... args) {
  std::ostringstream os;
  format_into(os, args...);
  // Only the file's base name: the message is for users, the path is noise.
  std::string path(file);
  size_t slash = path.find_last_of('/');
  os << " (" << (slash == std::string::npos ? path : path.substr(slash + 1)) << ":" << line << ")";
  throw Error(os.str());
}
}  // namespace detail

}  // namespace byol

// BYOL_CHECK(cond, "message parts", ...): throw byol::Error when cond is false.
#define BYOL_CHECK(cond, ...)                                         \
  do {                                                                \
    if (!(cond)) ::byol::detail::throw_error(__FILE__, __LINE__, __VA_ARGS__); \
  } while (0)

#define BYOL_FAIL(...) ::byol::detail::throw_error(__FILE__, __LINE__, __VA_ARGS__)
