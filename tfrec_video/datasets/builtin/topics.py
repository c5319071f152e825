"""The topics of the built-in dataset, and the languages and devices it draws.

`TOPICS` are the latent topics (name, category, typical duration, English and
Chinese vocabularies); `FILLER_WORDS` are the topic-free words of the title
noise pool; `LANGUAGES` are the title languages and `DEVICES` the devices,
with `_DEVICE_PROBS`, the share of users who prefer each.
"""

import collections
from typing import Tuple

from tfrec_video.datasets.builtin import truth as truth_lib

# Topic: name, category, typical duration (s), English words, Chinese words.
# The first words of each list are the most frequent in titles.
Topic = collections.namedtuple("Topic", "name category median_duration_s en zh")

TOPICS: Tuple[Topic, ...] = (
    Topic("cooking", "food", 480,
          ("recipe", "kitchen", "pasta", "chicken", "soup", "noodles", "curry", "grill", "sauce", "dinner",
           "chef", "salad", "dumplings", "spicy"),
          ("烹饪", "食谱", "厨房", "红烧肉", "面条", "饺子", "炒饭", "家常菜", "美食", "火锅", "做法", "麻辣",
           "蒸鱼", "汤")),
    Topic("football", "sports", 300,
          ("football", "soccer", "goal", "penalty", "striker", "league", "match", "highlights", "champions",
           "derby", "goalkeeper", "transfer", "worldcup", "freekick"),
          ("足球", "进球", "点球", "联赛", "比赛", "集锦", "冠军", "射门", "门将", "转会", "世界杯", "球星",
           "欧冠", "任意球")),
    Topic("cats", "pets", 60,
          ("cat", "kitten", "meow", "purr", "whiskers", "catnip", "tabby", "paws", "nap", "scratch", "fluffy",
           "litterbox"),
          ("猫", "小猫", "喵", "猫咪", "橘猫", "猫粮", "撸猫", "胡须", "猫砂", "萌宠", "铲屎官", "布偶猫")),
    Topic("travel", "travel", 720,
          ("travel", "trip", "beach", "hotel", "flight", "backpacking", "island", "mountains", "itinerary",
           "passport", "roadtrip", "sunset", "resort"),
          ("旅行", "旅游", "海滩", "酒店", "机票", "自由行", "攻略", "风景", "古镇", "自驾", "打卡", "度假",
           "日落")),
    Topic("gaming", "gaming", 1500,
          ("gameplay", "walkthrough", "boss", "speedrun", "minecraft", "rpg", "level", "console", "esports",
           "multiplayer", "loot", "controller", "quest"),
          ("游戏", "通关", "实况", "电竞", "我的世界", "副本", "手游", "主机", "联机", "装备", "速通", "关卡",
           "任务")),
    Topic("music", "music", 240,
          ("song", "guitar", "piano", "concert", "cover", "lyrics", "album", "singer", "drums", "melody",
           "acoustic", "band", "chorus"),
          ("音乐", "歌曲", "吉他", "钢琴", "演唱会", "翻唱", "歌词", "专辑", "歌手", "乐队", "旋律", "现场",
           "合唱")),
    Topic("news", "news", 180,
          ("news", "election", "breaking", "president", "economy", "policy", "report", "interview",
           "government", "crisis", "summit", "headlines", "parliament"),
          ("新闻", "选举", "突发", "总统", "经济", "政策", "报道", "采访", "政府", "危机", "峰会", "头条",
           "议会")),
    Topic("fitness", "health", 900,
          ("workout", "gym", "abs", "squats", "cardio", "strength", "pushups", "hiit", "muscle", "dumbbell",
           "plank", "fatburn", "bodyweight"),
          ("健身", "锻炼", "腹肌", "深蹲", "有氧", "力量", "俯卧撑", "增肌", "哑铃", "平板支撑", "燃脂", "训练",
           "塑形")),
    Topic("tech", "technology", 600,
          ("smartphone", "unboxing", "review", "laptop", "camera", "battery", "chip", "gadget", "iphone",
           "android", "specs", "benchmark", "headphones"),
          ("手机", "开箱", "评测", "笔记本", "相机", "电池", "芯片", "数码", "苹果", "安卓", "参数", "跑分",
           "耳机")),
    Topic("cars", "autos", 540,
          ("car", "engine", "drift", "supercar", "electric", "testdrive", "horsepower", "tesla", "racing",
           "garage", "tires", "sedan", "turbo"),
          ("汽车", "发动机", "漂移", "超跑", "电动车", "试驾", "马力", "特斯拉", "赛车", "改装", "轮胎", "轿车",
           "涡轮")),
    Topic("comedy", "entertainment", 120,
          ("funny", "prank", "comedy", "sketch", "jokes", "laugh", "fails", "standup", "parody", "meme",
           "hilarious", "bloopers"),
          ("搞笑", "恶作剧", "喜剧", "小品", "笑话", "爆笑", "段子", "脱口秀", "模仿", "沙雕", "名场面", "相声")),
    Topic("baking", "food", 600,
          ("cake", "bread", "cookies", "dough", "oven", "chocolate", "croissant", "pastry", "cupcake",
           "frosting", "sourdough", "muffin", "pie"),
          ("烘焙", "蛋糕", "面包", "饼干", "烤箱", "巧克力", "奶油", "甜点", "曲奇", "面团", "月饼", "蛋挞",
           "布丁")),
    Topic("basketball", "sports", 240,
          ("basketball", "dunk", "nba", "playoffs", "threepointer", "rebound", "lakers", "court", "crossover",
           "buzzerbeater", "mvp", "assist"),
          ("篮球", "扣篮", "季后赛", "三分球", "篮板", "助攻", "绝杀", "球场", "湖人", "运球", "盖帽", "全明星")),
    Topic("dogs", "pets", 75,
          ("dog", "puppy", "fetch", "bark", "leash", "corgi", "retriever", "walkies", "treats", "husky",
           "doggo", "shiba"),
          ("狗", "小狗", "狗狗", "柯基", "哈士奇", "金毛", "遛狗", "汪汪", "狗粮", "柴犬", "宠物", "拆家")),
    Topic("movies", "entertainment", 150,
          ("movie", "trailer", "film", "actor", "scene", "director", "cinema", "plot", "oscars", "sequel",
           "marvel", "premiere"),
          ("电影", "预告片", "演员", "导演", "影院", "剧情", "奥斯卡", "续集", "漫威", "首映", "解说", "大片")),
    Topic("yoga", "health", 1200,
          ("yoga", "meditation", "breathing", "mindfulness", "pose", "calm", "relax", "flexibility", "sleep",
           "mat", "zen", "balance"),
          ("瑜伽", "冥想", "呼吸", "正念", "体式", "放松", "助眠", "柔韧", "平衡", "静心", "减压", "禅")),
    Topic("science", "education", 600,
          ("physics", "space", "experiment", "rocket", "planet", "chemistry", "universe", "quantum", "biology",
           "lab", "nasa", "telescope"),
          ("物理", "太空", "实验", "火箭", "行星", "化学", "宇宙", "量子", "生物", "实验室", "科普", "望远镜")),
    Topic("diy", "lifestyle", 540,
          ("diy", "craft", "woodworking", "paint", "origami", "knitting", "sewing", "handmade", "tools", "glue",
           "decor", "upcycle"),
          ("手工", "木工", "绘画", "折纸", "编织", "缝纫", "手作", "工具", "装饰", "改造", "粘土", "教程")),
    Topic("beauty", "lifestyle", 420,
          ("makeup", "skincare", "lipstick", "outfit", "fashion", "haircut", "nails", "runway", "style",
           "foundation", "perfume", "dress"),
          ("化妆", "护肤", "口红", "穿搭", "时尚", "发型", "美甲", "走秀", "风格", "粉底", "香水", "连衣裙")),
    Topic("kids", "kids", 360,
          ("cartoon", "nursery", "rhymes", "toys", "kids", "lego", "animation", "alphabet", "dinosaur",
           "princess", "puzzle", "bedtime"),
          ("动画", "儿歌", "玩具", "儿童", "乐高", "卡通", "字母", "恐龙", "公主", "拼图", "睡前故事", "早教")),
)

# Words that carry no topic: part of the noise-word pool.
FILLER_WORDS = {
    "en": ("best", "new", "top10", "howto", "official", "full", "part2", "ultimate", "amazing", "2024",
           "episode", "mustwatch", "vlog", "tips", "easy", "today", "live", "shorts"),
    "zh": ("最新", "必看", "完整版", "合集", "第一集", "推荐", "精彩", "超级", "挑战", "日常", "分享", "终于",
           "真的", "太好了", "直播", "短片"),
}

LANGUAGES = ("en", "zh", "mixed")
DEVICES = truth_lib.DEVICES
_DEVICE_PROBS = (0.55, 0.10, 0.15, 0.20)   # phone, tablet, tv, desktop
