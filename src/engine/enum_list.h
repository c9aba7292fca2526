// One definition per enum: its values and their printed names come from one X-macro list, and its
// count comes from the same list. Plan loading range-checks stored values against the count and
// every name table is generated from the list, so a value added to an enum cannot leave a table, a
// range check or a binding behind (enum_count<E>() replaces the hand-kept counts there were).
//
//   #define KILN_FOO_VALUES(X) X(kA, "a") X(kB, "b")
//   KILN_ENUM(Foo, KILN_FOO_VALUES)   // enum class Foo : uint8_t { kA, kB }; and EnumInfo<Foo>
//
// An enum nested in a struct is declared with KILN_ENUM_VALUES inside it and described by
// KILN_ENUM_INFO after it, at namespace scope.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kiln::engine {

template <class E>
struct EnumInfo;  // specialized by KILN_ENUM / KILN_ENUM_INFO: count and names

template <class E>
constexpr int enum_count() {
  return EnumInfo<E>::count;
}
// The value's name from the enum's list; "?" for a value outside it.
template <class E>
const char* enum_name(E e) {
  const auto i = static_cast<size_t>(e);
  return i < static_cast<size_t>(EnumInfo<E>::count) ? EnumInfo<E>::names[i] : "?";
}

}  // namespace kiln::engine

#define KILN_ENUM_VALUE_(id, name) id,
#define KILN_ENUM_NAME_(id, name) name,
#define KILN_ENUM_ONE_(id, name) +1
#define KILN_ENUM_VALUES(LIST) LIST(KILN_ENUM_VALUE_)
#define KILN_ENUM_INFO(E, LIST)                                           \
  template <>                                                             \
  struct EnumInfo<E> {                                                    \
    static constexpr int count = 0 LIST(KILN_ENUM_ONE_);                  \
    static constexpr const char* names[] = {LIST(KILN_ENUM_NAME_)};       \
    static_assert(sizeof(names) / sizeof(names[0]) == size_t(count), ""); \
  };
#define KILN_ENUM(E, LIST)                   \
  enum class E : uint8_t { LIST(KILN_ENUM_VALUE_) }; \
  KILN_ENUM_INFO(E, LIST)
