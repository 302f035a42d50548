# The sources of the gpu library, relative to gpu/: one list for gpu/CMakeLists.txt (inside the
# kvferry build) and gpu/standalone/CMakeLists.txt (alone, on GPU machines without Debian's
# packages), so the two builds cannot drift apart.
set(KVFERRY_GPU_SOURCES cpu_copy_engine.cpp copy_plan.cpp device_buffer.cpp device_select.cpp kv_layout.cpp)
# Builds that found CUDA: the runtime API only (never the driver stub), so a machine without a
# driver still loads and runs the binaries.
set(KVFERRY_GPU_CUDA_SOURCES cuda_probe.cpp cuda_copy_engine.cpp cuda_copy_kernel.cu kv_convert.cu)
set(KVFERRY_GPU_NO_CUDA_SOURCES no_cuda.cpp)
