// expect: pack\(\) is for sub-byte widths
#include <cstdint>
#include <vector>
#include <ssmq/precision/packing.hpp>
void f() {
  std::vector<std::int8_t> v(2);
  std::vector<std::uint8_t> b(2);
  ssmq::pack<ssmq::qint<8>>(v, b);
}
