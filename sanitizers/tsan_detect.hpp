// KVFERRY_TSAN is defined when this translation unit is compiled with -fsanitize=thread
// (GCC defines __SANITIZE_THREAD__, Clang answers __has_feature).
#pragma once

#if defined(__SANITIZE_THREAD__)
#define KVFERRY_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KVFERRY_TSAN 1
#endif
#endif
