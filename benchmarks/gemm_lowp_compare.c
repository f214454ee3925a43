/* gemm_lowp_compare.c — oneMKL vs oneDNN on the encoders' GEMM shapes (the measurement behind the choice of oneDNN
 * for the bf16 / int8 encoders; see README "Reduced precision on the CPU" and benchmarks/RESULTS.md).
 *
 * Not part of the build. Needs oneMKL (pip install mkl-devel) and oneDNN 2.x (apt-get install libdnnl-dev):
 *   P=$(python -c 'import sys; print(sys.prefix)')
 *   gcc -O2 -fopenmp benchmarks/gemm_lowp_compare.c -o /tmp/gemm_cmp -I$P/include -L$P/lib -Wl,-rpath,$P/lib \
 *       -l:libmkl_rt.so.2 -ldnnl          # (libmkl_rt.so.3 for oneMKL 2026)
 *   MKL_THREADING_LAYER=GNU OMP_NUM_THREADS=2 /tmp/gemm_cmp
 * Weights (N, K) as in nn.Linear, activations (M, K), y = x W^T. oneDNN's weights are pre-packed ("any" layout, as
 * model/cp_lowp.c does at load); MKL's are plain. Each engine runs once per round, rounds interleaved, min of 5.
 */
#include <stdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static const int SH[][3]={{16,512,1536},{16,2048,512},{256,512,2048},{256,2048,512},{1024,512,2048},{1024,2048,512},{1024,384,1536},{1024,1536,384},{16,384,1536}};
#define NSH (int)(sizeof SH/sizeof SH[0])
static float *rnd(size_t n){float*p=aligned_alloc(64,(n*4+63)/64*64);for(size_t i=0;i<n;i++)p[i]=(float)rand()/RAND_MAX-0.5f;return p;}
#include <mkl.h>
#include <oneapi/dnnl/dnnl.h>
static dnnl_engine_t eng; static dnnl_stream_t st;
typedef struct {dnnl_primitive_t p; dnnl_memory_t s,w,d;} prim;
static prim mk(int M,int K,int N,dnnl_data_type_t t,dnnl_data_type_t to,void*x,void*y){
  dnnl_memory_desc_t smd,wmd,dmd; dnnl_dims_t sd={M,K},wd={K,N},dd={M,N};
  dnnl_memory_desc_init_by_tag(&smd,2,sd,t,dnnl_ab); dnnl_memory_desc_init_by_tag(&wmd,2,wd,t,dnnl_format_tag_any); dnnl_memory_desc_init_by_tag(&dmd,2,dd,to,dnnl_ab);
  dnnl_matmul_desc_t md; dnnl_matmul_desc_init(&md,&smd,&wmd,NULL,&dmd); dnnl_primitive_desc_t pd; if(dnnl_primitive_desc_create(&pd,&md,NULL,eng,NULL)){puts("nopd");exit(1);}
  const dnnl_memory_desc_t*pw=dnnl_primitive_desc_query_md(pd,dnnl_query_weights_md,0); size_t ws=dnnl_memory_desc_get_size(pw); void*wb=aligned_alloc(64,(ws+63)/64*64); memset(wb,1,ws);
  prim r; dnnl_primitive_create(&r.p,pd); dnnl_memory_create(&r.s,&smd,eng,x); dnnl_memory_create(&r.w,pw,eng,wb); dnnl_memory_create(&r.d,&dmd,eng,y); return r;}
static void run(prim*r){
  dnnl_exec_arg_t a[3]={{DNNL_ARG_SRC,r->s},{DNNL_ARG_WEIGHTS,r->w},{DNNL_ARG_DST,r->d}};
  if(dnnl_primitive_execute(r->p,st,3,a)!=dnnl_success||dnnl_stream_wait(st)!=dnnl_success){puts("dnnl execute failed");exit(1);}}
int main(){
  dnnl_engine_create(&eng,dnnl_cpu,0); dnnl_stream_create(&st,eng,dnnl_stream_default_flags);
  printf("dnnl isa %d, MKL: ",(int)dnnl_get_effective_cpu_isa()); char buf[256]; mkl_get_version_string(buf,256); puts(buf);
  printf("%-18s %9s %9s %9s %9s %9s   (ms, min of 5 interleaved rounds)\n","M,K,N","mkl-f32","mkl-bf16","dnnl-bf16","mkl-s8u8","dnnl-s8");
  for(int si=0;si<NSH;si++){int M=SH[si][0],K=SH[si][1],N=SH[si][2];
    float*x=rnd((size_t)M*K),*w=rnd((size_t)N*K),*y=rnd((size_t)M*N); MKL_BF16*xb=calloc((size_t)M*K,2),*wb=calloc((size_t)N*K,2);
    MKL_INT8*a8=calloc((size_t)M*K,1),*b8=calloc((size_t)N*K,1); MKL_INT32*c32=calloc((size_t)M*N,4),co=0;
    prim pb=mk(M,K,N,dnnl_bf16,dnnl_f32,xb,y), ps=mk(M,K,N,dnnl_s8,dnnl_s32,a8,c32);
    int reps= M<=16?50:(M<=256?8:3); double best[5]={1e9,1e9,1e9,1e9,1e9};
    for(int round=0;round<5;round++){ double t0;
      t0=now(); for(int r=0;r<reps;r++) cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasTrans,M,N,K,1,x,K,w,K,0,y,N); t0=(now()-t0)/reps; if(t0<best[0])best[0]=t0;
      t0=now(); for(int r=0;r<reps;r++) cblas_gemm_bf16bf16f32(CblasRowMajor,CblasNoTrans,CblasTrans,M,N,K,1,xb,K,wb,K,0,y,N); t0=(now()-t0)/reps; if(t0<best[1])best[1]=t0;
      t0=now(); for(int r=0;r<reps;r++) run(&pb); t0=(now()-t0)/reps; if(t0<best[2])best[2]=t0;
      t0=now(); for(int r=0;r<reps;r++) cblas_gemm_s8u8s32(CblasRowMajor,CblasNoTrans,CblasTrans,CblasFixOffset,M,N,K,1,a8,K,0,b8,K,0,0,c32,N,&co); t0=(now()-t0)/reps; if(t0<best[3])best[3]=t0;
      t0=now(); for(int r=0;r<reps;r++) run(&ps); t0=(now()-t0)/reps; if(t0<best[4])best[4]=t0;
    }
    printf("%4d,%4d,%4d     %9.3f %9.3f %9.3f %9.3f %9.3f\n",M,K,N,best[0]*1e3,best[1]*1e3,best[2]*1e3,best[3]*1e3,best[4]*1e3);
  }
}
