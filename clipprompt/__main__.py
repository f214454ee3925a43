"""python -m clipprompt {demo,normalize,tokenize,encode,expand,search,bench,info}"""
from .cli import main

raise SystemExit(main())
