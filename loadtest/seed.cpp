// layercache-seed: pushes a generated image (incompressible layers of given sizes) to a
// registry, for the demo and load tests. Prints the manifest digest.
//
//   layercache-seed --registry http://127.0.0.1:5001 --repo demo/app --tag v1
//                   --layers 4MiB,8MiB,16MiB [--format oci|docker] [--seed N] [--ca FILE]
//   layercache-seed --free-port
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <iostream>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "config/config.hpp"
#include "tests/support/image.hpp"

namespace {

// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick for port 0), for
// scripts that start servers on it.
std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int error = errno;
    ::close(fd);
    throw std::system_error(error, std::generic_category(), "bind");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

int run(int argc, char** argv) {
  using namespace layercache;
  std::string registry, repo, tag = "latest", layers = "4MiB,8MiB,16MiB", format = "oci", ca;
  std::uint64_t seed = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
      return argv[++i];
    };
    try {
      if (arg == "--free-port") {
        std::cout << free_port() << "\n";
        return 0;
      } else if (arg == "--registry") {
        registry = value();
      } else if (arg == "--repo") {
        repo = value();
      } else if (arg == "--tag") {
        tag = value();
      } else if (arg == "--layers") {
        layers = value();
      } else if (arg == "--format") {
        format = value();
      } else if (arg == "--seed") {
        seed = std::stoull(value());
      } else if (arg == "--ca") {
        ca = value();
      } else {
        std::cerr << "unknown argument " << arg << "\n";
        return 2;
      }
    } catch (const std::exception& e) {
      std::cerr << e.what() << "\n";
      return 2;
    }
  }
  if (registry.empty() || repo.empty() || (format != "oci" && format != "docker")) {
    std::cerr << "usage: layercache-seed --registry URL --repo NAME [--tag T] [--layers "
                 "4MiB,8MiB] [--format oci|docker] [--seed N] [--ca FILE]\n";
    return 2;
  }
  std::vector<std::size_t> sizes;
  std::stringstream list(layers);
  for (std::string item; std::getline(list, item, ',');) {
    auto n = config::parse_size(item);
    if (!n || *n == 0) {
      std::cerr << "bad layer size: " << item << "\n";
      return 2;
    }
    sizes.push_back(static_cast<std::size_t>(*n));
  }
  try {
    const auto img = testing::make_image(
        format == "oci" ? testing::image_format::oci : testing::image_format::docker, sizes, seed);
    testing::registry_pusher(registry, ca).push_image(repo, tag, img);
    std::cout << img.manifest.digest.str() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "layercache-seed: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

// The argument parsing of run() can throw too (allocation): no exception leaves main.
int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "layercache-seed: " << e.what() << "\n";
    return 1;
  }
}
