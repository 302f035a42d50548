set terminal png size 900,540
set output 'bench/results/bandwidth-shm.png'
set logscale x 2
set logscale y 10
set format x '%.0b%BB'
set xlabel 'block size'
set ylabel 'GB/s (log)'
set title 'kvferry over UCX shm vs the machine (same run)'
set key right bottom
set grid
plot 'bench/results/bandwidth-shm.png.dat' using 1:2 with linespoints title 'kvferry', 'bench/results/bandwidth-shm.png.dat' using 1:3 with linespoints title 'ucx\_perftest ucp\_put\_bw', 'bench/results/bandwidth-shm.png.dat' using 1:4 with linespoints title 'memcpy (1 thread)'
