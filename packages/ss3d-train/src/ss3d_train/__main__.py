from ss3d_train.cli import main

main()
