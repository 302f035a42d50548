// AddressSanitizer (LeakSanitizer) set-up for every test binary and the kvferry tool; compiled
// in only under -fsanitize=address (cmake -DKVFERRY_SANITIZE=address,undefined). Kept short:
// every line says why it is there.
#if defined(__SANITIZE_ADDRESS__)

extern "C" const char* __lsan_default_suppressions() {
  return
      // CAF 0.17.6 (Debian) loses a doorman (a published port's listening handler, 200 B) now
      // and then when a port is unpublished and published again in one process, which the
      // supervisor does when the sender restarts (F10): one cycle in 10 to 40 on a busy
      // machine, never one that kvferry holds (it holds no doorman). The default unwinder
      // stops at CAF's first frame (Debian builds CAF without frame pointers), so the
      // allocation is named by that frame: new_doorman in libcaf_io; in libcaf_openssl a
      // function it does not export, hence the library.
      "leak:caf::io::network::default_multiplexer::new_doorman\n"
      "leak:libcaf_openssl.so\n";
}

#endif
