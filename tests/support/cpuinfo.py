"""/proc/cpuinfo texts of other machines, for describing a CPU that is not this one."""

#: The first processor entries of a real /proc/cpuinfo (AMD EPYC, Zen 3, 2-vCPU VM; the flags
#: line shortened to the ones that matter here): AVX2 and FMA, no AVX-512, no VNNI, no AMX.
EPYC_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
stepping\t: 0
cpu MHz\t\t: 2445.406
cache size\t: 512 KB
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext invpcid_single ssbd ibrs ibpb stibp vmmcall fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 clzero xsaveerptr rdpru arat npt nrip_save umip vaes vpclmulqdq rdpid fsrm
bogomips\t: 4890.81

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
cpu MHz\t\t: 2445.406
flags\t\t: fpu sse sse2
"""


#: A Zen 4 EPYC as /proc/cpuinfo shows it (flags line shortened): AVX-512 with AVX512-BF16 and
#: AVX512-VNNI, no AMX. It accepts 512-bit FMAs but executes them on 256-bit units, so its
#: nominal FP32 figure is twice what it reaches: the case measured peaks exist for.
ZEN4_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
cpu MHz\t\t: 2596.150
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 avx512_vnni hypervisor
"""
