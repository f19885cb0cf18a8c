from ss3d_eval.cli import main

main()
