"""Write ecrec/data/demo_catalog.jsonl: the project's own bilingual demo catalog.

Every title and description here was written for ecrec; brands are invented. Each category has
a few "selling points" (camera, battery, light, sound, fabric ...) so that text-driven
recommendations are visibly right or wrong. Deterministic: re-running gives the same file.

    python scripts/make_demo_catalog.py
"""
from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "ecrec" / "data" / "demo_catalog.jsonl"
EPOCH = 1_790_000_000  # 2026-09; items are spread over the 120 days before it

# brand, language of its listing
BRANDS = {
    "phones": [("星耀", "zh"), ("Lumio", "en"), ("青禾", "zh"), ("Novix", "en"), ("云岚", "zh")],
    "laptops": [("极客本", "zh"), ("Arcbook", "en"), ("墨岩", "zh"), ("Veloce", "en"), ("Keystone", "en")],
    "cameras": [("光影", "zh"), ("Optica", "en"), ("北辰", "zh"), ("Fieldway", "en"), ("Kairo", "en")],
    "headphones": [("声谷", "zh"), ("Auralis", "en"), ("静界", "zh"), ("Tempo", "en"), ("Resono", "en")],
    "home": [("家悦", "zh"), ("Hearth", "en"), ("暖居", "zh"), ("Nordby", "en"), ("简物", "zh")],
    "clothing": [("棉语", "zh"), ("Trailfolk", "en"), ("素衣", "zh"), ("Urbane", "en"), ("Woolmark Lane", "en")],
    "beauty": [("花漾", "zh"), ("Lumière Lab", "en"), ("水研", "zh"), ("Petalis", "en"), ("肌本", "zh")],
    "books": [("中信出版", "zh"), ("Harbor Press", "en"), ("读客", "zh"), ("Lantern Books", "en"), ("译林", "zh")],
    "sports": [("跃动", "zh"), ("Stride", "en"), ("峰行", "zh"), ("Apex Trail", "en"), ("Kinetic", "en")],
    "toys": [("童趣", "zh"), ("Brickly", "en"), ("小匠", "zh"), ("Playwise", "en"), ("Tinker Kids", "en")],
    "food": [("山野", "zh"), ("Grainhouse", "en"), ("茶语", "zh"), ("Roastery Co.", "en"), ("鲜邻", "zh")],
    "power": [("电小满", "zh"), ("Voltio", "en"), ("能量盒", "zh"), ("ChargeMate", "en"), ("Ampere", "en")],
}

# category -> (zh name, price range, rebuyable, selling points)
# selling point: key, zh title, en title, zh description, en description, zh tags, en tags
C = {
    "phones": ("手机", (999, 6999), False, [
        ("camera", "影像旗舰手机", "Camera Flagship Phone",
         "5000万像素主摄，光学防抖，夜景拍照清晰细腻，人像虚化自然，拍照效果出众",
         "50 MP main camera with optical stabilisation; sharp night photos, natural portrait blur and excellent photo quality",
         ["拍照", "影像", "夜景", "人像"], ["camera", "photography", "night mode", "portrait"]),
        ("zoom", "长焦拍照手机", "Periscope Zoom Camera Phone",
         "潜望式长焦镜头，5倍光学变焦，演唱会和远景拍照都清楚，专业影像调色",
         "Periscope telephoto with 5x optical zoom for concerts and landscapes; pro-grade colour tuning for photos",
         ["拍照", "长焦", "变焦"], ["camera", "telephoto", "zoom"]),
        ("battery", "超长续航手机", "Long Battery Life Phone",
         "6000mAh大电池，重度使用两天一充，66W快充半小时充满，续航焦虑终结者",
         "6000 mAh battery lasts two days of heavy use; 66 W fast charging fills it in half an hour",
         ["续航", "大电池", "快充"], ["battery life", "big battery", "fast charging"]),
        ("gaming", "电竞游戏手机", "Gaming Phone",
         "144Hz高刷屏，液冷散热，肩键操控，长时间游戏不掉帧",
         "144 Hz display, vapour-chamber cooling and shoulder triggers: no frame drops in long sessions",
         ["游戏", "高刷", "散热"], ["gaming", "high refresh rate", "cooling"]),
        ("slim", "轻薄时尚手机", "Ultra-slim Phone",
         "机身仅7.2毫米、168克，单手握持轻盈，多彩玻璃后盖",
         "Only 7.2 mm thin and 168 g, light in one hand, with a colourful glass back",
         ["轻薄", "颜值", "手感"], ["slim", "lightweight", "design"]),
        ("budget", "高性价比手机", "Value Phone",
         "千元价位，流畅日常使用，大屏幕看视频，学生和长辈的实惠之选",
         "Affordable everyday phone with a big screen for video; a sensible pick for students and parents",
         ["性价比", "实惠", "大屏"], ["budget", "value", "big screen"]),
    ]),
    "laptops": ("笔记本电脑", (2999, 14999), False, [
        ("light", "轻薄办公笔记本", "Ultralight Laptop",
         "机身1.1公斤，14英寸2.8K屏，出差通勤随身带，办公续航12小时",
         "1.1 kg with a 14-inch 2.8K screen, easy to carry on commutes, 12 hours of office battery",
         ["轻薄", "便携", "办公"], ["lightweight", "portable", "office"]),
        ("gaming", "游戏本", "Gaming Laptop",
         "独立显卡，165Hz电竞屏，双风扇散热，3A大作流畅运行",
         "Dedicated graphics, 165 Hz panel and dual-fan cooling run the latest games smoothly",
         ["游戏", "独显", "散热"], ["gaming", "graphics card", "cooling"]),
        ("creator", "创作者笔记本", "Creator Laptop",
         "100% DCI-P3色域屏，适合修图剪辑，32GB内存，色彩准确",
         "100% DCI-P3 display for photo and video editing, 32 GB memory, accurate colour",
         ["剪辑", "修图", "色准"], ["video editing", "photo editing", "colour accuracy"]),
        ("battery", "长续航笔记本", "All-day Battery Laptop",
         "75Wh大电池，续航18小时，一整天不用找插座，支持快充",
         "75 Wh battery lasts 18 hours, a full day away from the socket, with fast charging",
         ["续航", "大电池"], ["battery life", "all-day battery"]),
        ("student", "学生网课笔记本", "Student Laptop",
         "价格实惠，摄像头清晰，键盘舒适，网课写作业够用",
         "Affordable, with a clear webcam and comfortable keyboard: enough for classes and homework",
         ["学生", "性价比", "网课"], ["student", "budget", "online classes"]),
    ]),
    "cameras": ("相机", (1999, 19999), False, [
        ("mirrorless", "全画幅微单相机", "Full-frame Mirrorless Camera",
         "2400万像素全画幅传感器，五轴防抖，高感低噪，人像和风光拍照画质出色",
         "24 MP full-frame sensor, 5-axis stabilisation, clean high ISO; superb image quality for portraits and landscapes",
         ["拍照", "全画幅", "画质"], ["camera", "full frame", "image quality"]),
        ("vlog", "Vlog相机", "Vlog Camera",
         "翻转屏，4K视频，内置降噪麦克风，自拍美颜，旅行记录方便",
         "Flip screen, 4K video and a noise-reducing microphone: easy travel vlogging and selfies",
         ["视频", "vlog", "自拍"], ["vlog", "4K video", "selfie"]),
        ("action", "运动相机", "Action Camera",
         "10米防水，超强防抖，骑行滑雪潜水都能拍，广角视野",
         "Waterproof to 10 m with rock-steady stabilisation for cycling, skiing and diving; wide field of view",
         ["运动", "防水", "防抖"], ["action", "waterproof", "stabilisation"]),
        ("instant", "拍立得相机", "Instant Film Camera",
         "即拍即得相纸，复古色调，聚会旅行留念，操作简单",
         "Prints the photo in seconds with a retro look; simple to use at parties and on trips",
         ["拍立得", "复古", "聚会"], ["instant", "retro", "party"]),
        ("lens", "大光圈定焦镜头", "Fast Prime Lens",
         "F1.4大光圈，虚化柔美，暗光拍摄清晰，人像定焦首选",
         "F1.4 aperture for creamy bokeh and clean low-light shots; the classic portrait prime",
         ["镜头", "大光圈", "人像"], ["lens", "wide aperture", "portrait"]),
    ]),
    "headphones": ("耳机", (199, 2999), False, [
        ("anc", "主动降噪耳机", "Noise-cancelling Headphones",
         "深度主动降噪，地铁飞机安静如图书馆，通透模式一键切换",
         "Deep active noise cancelling makes trains and flights library-quiet; transparency mode in one tap",
         ["降噪", "通勤", "安静"], ["noise cancelling", "commute", "quiet"]),
        ("hifi", "HiFi音质耳机", "Hi-Fi Headphones",
         "高解析动圈单元，音质通透，低音饱满，支持无损LDAC",
         "High-resolution drivers with clear mids and rich bass; lossless LDAC support",
         ["音质", "HiFi", "低音"], ["sound quality", "hi-fi", "bass"]),
        ("sport", "运动蓝牙耳机", "Sports Earbuds",
         "耳挂设计跑步不掉，IPX5防汗，轻巧舒适",
         "Ear hooks stay put on runs, IPX5 sweat-proof, light and comfortable",
         ["运动", "防汗", "跑步"], ["sports", "sweat-proof", "running"]),
        ("battery", "长续航耳机", "Long-battery Earbuds",
         "单次续航10小时，配合充电盒共40小时，充电10分钟听2小时",
         "10 hours per charge and 40 with the case; 10 minutes of charging gives 2 hours of music",
         ["续航", "充电盒"], ["battery life", "charging case"]),
        ("gaming", "游戏耳机", "Gaming Headset",
         "低延迟，7.1环绕声，听声辨位，带降噪麦克风",
         "Low latency and 7.1 surround sound to locate footsteps, with a noise-cancelling mic",
         ["游戏", "低延迟", "麦克风"], ["gaming", "low latency", "microphone"]),
    ]),
    "home": ("家居家电", (59, 3999), False, [
        ("vacuum", "扫拖一体机器人", "Robot Vacuum and Mop",
         "激光导航，自动集尘，扫拖一体，宠物毛发也能吸干净",
         "Laser navigation, self-emptying dock, vacuums and mops, handles pet hair",
         ["扫地", "清洁", "宠物"], ["cleaning", "robot vacuum", "pet hair"]),
        ("air", "空气净化器", "Air Purifier",
         "HEPA滤网，除甲醛除花粉，静音睡眠模式",
         "HEPA filter removes formaldehyde and pollen; whisper-quiet sleep mode",
         ["净化", "静音", "过敏"], ["air purifier", "quiet", "allergies"]),
        ("kitchen", "多功能料理锅", "Multi-cooker",
         "蒸煮炖炒一锅搞定，预约定时，内胆不粘易清洗",
         "Steams, stews and sautés in one pot with delayed start; non-stick inner pot cleans easily",
         ["厨房", "做饭", "不粘"], ["kitchen", "cooking", "non-stick"]),
        ("bedding", "纯棉四件套", "Cotton Bedding Set",
         "100%长绒棉，亲肤透气，柔软不起球",
         "100% long-staple cotton, soft, breathable and pill-resistant",
         ["床品", "纯棉", "亲肤"], ["bedding", "cotton", "soft"]),
        ("lamp", "护眼台灯", "Eye-care Desk Lamp",
         "无频闪，全光谱，色温可调，学习阅读不累眼",
         "Flicker-free full-spectrum light with adjustable colour temperature for reading without eye strain",
         ["护眼", "台灯", "阅读"], ["desk lamp", "eye care", "reading"]),
    ]),
    "clothing": ("服装", (69, 1299), False, [
        ("down", "轻暖羽绒服", "Lightweight Down Jacket",
         "90%白鸭绒，轻薄保暖，防泼水面料，可收纳",
         "90% duck down, light yet warm, water-repellent shell that packs into its pocket",
         ["保暖", "羽绒", "冬季"], ["warm", "down", "winter"]),
        ("tee", "纯棉T恤", "Cotton T-shirt",
         "精梳棉面料，柔软透气，版型宽松，夏天舒适",
         "Combed cotton fabric, soft and breathable, relaxed fit for summer",
         ["面料", "纯棉", "透气"], ["fabric", "cotton", "breathable"]),
        ("outdoor", "户外冲锋衣", "Waterproof Hiking Shell",
         "三层防水透气面料，防风防雨，登山徒步必备",
         "Three-layer waterproof breathable fabric, wind- and rain-proof for hiking and climbing",
         ["户外", "防水", "登山"], ["outdoor", "waterproof", "hiking"]),
        ("wool", "羊毛针织衫", "Merino Wool Sweater",
         "美利奴羊毛，不扎身，通勤百搭，保暖有型",
         "Merino wool that never itches; a warm, smart layer for the office",
         ["羊毛", "面料", "通勤"], ["wool", "fabric", "office"]),
        ("jeans", "弹力修身牛仔裤", "Stretch Slim Jeans",
         "弹力牛仔面料，修身显瘦，久坐不勒",
         "Stretch denim with a slim, flattering fit that stays comfortable all day",
         ["牛仔", "修身", "弹力"], ["jeans", "slim fit", "stretch"]),
    ]),
    "beauty": ("美妆护肤", (49, 899), True, [
        ("moist", "保湿补水面霜", "Hydrating Moisturiser",
         "玻尿酸补水，干皮救星，清爽不油腻",
         "Hyaluronic acid for deep hydration, a rescue for dry skin, light and non-greasy",
         ["保湿", "补水", "干皮"], ["hydrating", "moisturiser", "dry skin"]),
        ("sun", "清爽防晒霜", "Lightweight Sunscreen",
         "SPF50+ PA++++，防水防汗，不假白不闷痘",
         "SPF 50+ PA++++, water and sweat resistant, no white cast and no breakouts",
         ["防晒", "清爽", "户外"], ["sunscreen", "SPF", "lightweight"]),
        ("lipstick", "丝绒哑光口红", "Velvet Matte Lipstick",
         "显白正红色，持久不拔干，丝绒质地",
         "A flattering true red, long-wearing and never drying, with a velvet finish",
         ["口红", "显白", "持久"], ["lipstick", "long-lasting", "matte"]),
        ("serum", "修护精华液", "Repair Serum",
         "烟酰胺提亮肤色，修护屏障，敏感肌可用",
         "Niacinamide brightens and repairs the skin barrier; suitable for sensitive skin",
         ["精华", "提亮", "敏感肌"], ["serum", "brightening", "sensitive skin"]),
        ("cleanser", "氨基酸洗面奶", "Gentle Amino Cleanser",
         "温和氨基酸配方，洗后不紧绷，泡沫细腻",
         "Gentle amino-acid formula that leaves skin soft, never tight, with a fine lather",
         ["洁面", "温和", "氨基酸"], ["cleanser", "gentle", "foam"]),
    ]),
    "books": ("图书", (29, 199), False, [
        ("scifi", "科幻小说", "Science Fiction Novel",
         "宇宙尺度的硬科幻，想象力恢弘，情节紧凑",
         "Hard science fiction on a cosmic scale, vast imagination and a tight plot",
         ["科幻", "小说", "宇宙"], ["science fiction", "novel", "space"]),
        ("history", "历史通俗读物", "Popular History",
         "用故事讲透王朝兴衰，史料扎实，通俗易读",
         "The rise and fall of dynasties told as stories, well sourced and easy to read",
         ["历史", "通俗", "故事"], ["history", "narrative", "stories"]),
        ("kids", "儿童绘本", "Children's Picture Book",
         "精美插画，睡前故事，培养孩子阅读兴趣",
         "Beautiful illustrations and bedtime stories that get children reading",
         ["绘本", "儿童", "睡前故事"], ["picture book", "children", "bedtime"]),
        ("business", "商业管理书", "Business Book",
         "拆解创业与管理案例，实用方法论，职场进阶",
         "Start-up and management case studies with practical methods for your career",
         ["商业", "管理", "职场"], ["business", "management", "career"]),
        ("cook", "家常菜谱", "Home Cooking Cookbook",
         "一百道快手家常菜，步骤图清晰，新手也能做",
         "One hundred quick home recipes with clear step photos, easy for beginners",
         ["菜谱", "烹饪", "家常"], ["cookbook", "cooking", "recipes"]),
    ]),
    "sports": ("运动户外", (59, 2999), False, [
        ("run", "缓震跑步鞋", "Cushioned Running Shoes",
         "高回弹中底，缓震保护膝盖，透气网面，马拉松训练",
         "High-rebound midsole protects the knees, breathable mesh upper, built for marathon training",
         ["跑步", "缓震", "透气"], ["running", "cushioning", "breathable"]),
        ("yoga", "防滑瑜伽垫", "Non-slip Yoga Mat",
         "6毫米加厚，双面防滑，环保TPE材质",
         "6 mm thick, non-slip on both sides, eco-friendly TPE",
         ["瑜伽", "防滑", "健身"], ["yoga", "non-slip", "fitness"]),
        ("tent", "户外露营帐篷", "Camping Tent",
         "一分钟速开，防雨防风，适合3-4人露营",
         "Pitches in one minute, rain- and wind-proof, sleeps three to four",
         ["露营", "帐篷", "防雨"], ["camping", "tent", "waterproof"]),
        ("bike", "城市通勤自行车", "City Commuter Bike",
         "铝合金车架，轻便好骑，7速变速，上班通勤",
         "Aluminium frame, light and easy to ride, 7 speeds for the daily commute",
         ["骑行", "通勤", "轻便"], ["cycling", "commute", "lightweight"]),
        ("dumbbell", "可调节哑铃", "Adjustable Dumbbells",
         "2-24公斤快速调节，居家力量训练，省空间",
         "Adjusts from 2 to 24 kg in seconds for strength training at home; saves space",
         ["健身", "力量", "居家"], ["strength", "home gym", "dumbbells"]),
    ]),
    "toys": ("玩具", (39, 999), False, [
        ("blocks", "拼装积木", "Building Blocks Set",
         "1200颗粒城市街景，锻炼动手能力，亲子一起拼",
         "1,200-piece city street set that builds hands-on skills; fun for parents and kids together",
         ["积木", "拼装", "亲子"], ["building blocks", "construction", "family"]),
        ("rc", "遥控越野车", "RC Off-road Car",
         "四驱越野，时速30公里，防摔耐撞，可充电",
         "Four-wheel drive, 30 km/h, crash-proof body and rechargeable battery",
         ["遥控车", "越野", "男孩"], ["remote control", "off-road", "racing"]),
        ("plush", "毛绒公仔", "Plush Toy",
         "柔软亲肤，可机洗，陪伴宝宝入睡",
         "Super soft and machine washable, a bedtime companion for babies",
         ["毛绒", "安抚", "宝宝"], ["plush", "soft toy", "baby"]),
        ("stem", "编程机器人", "Coding Robot Kit",
         "图形化编程，培养逻辑思维，STEM科学启蒙",
         "Block-based coding that teaches logical thinking; a first step into STEM",
         ["编程", "STEM", "益智"], ["coding", "STEM", "educational"]),
        ("puzzle", "益智拼图", "Jigsaw Puzzle",
         "1000片风景拼图，纸板厚实，锻炼专注力",
         "1,000-piece landscape jigsaw on thick card; great for focus",
         ["拼图", "益智", "专注"], ["jigsaw", "puzzle", "focus"]),
    ]),
    "food": ("食品饮料", (19, 399), True, [
        ("coffee", "精品咖啡豆", "Specialty Coffee Beans",
         "埃塞俄比亚耶加雪菲，中度烘焙，花果香气，酸度明亮",
         "Ethiopian Yirgacheffe, medium roast, floral and fruity with bright acidity",
         ["咖啡", "烘焙", "手冲"], ["coffee", "roast", "pour-over"]),
        ("tea", "明前龙井绿茶", "Spring Longjing Green Tea",
         "明前采摘，豆香清新，回甘持久",
         "Picked before Qingming, fresh nutty aroma and a long sweet finish",
         ["绿茶", "龙井", "茶叶"], ["green tea", "Longjing", "tea"]),
        ("nuts", "每日坚果", "Daily Mixed Nuts",
         "六种坚果果干独立小包，低温烘焙，健康零食",
         "Six nuts and dried fruits in single-serve packs, slow-roasted, a healthy snack",
         ["坚果", "零食", "健康"], ["nuts", "snack", "healthy"]),
        ("noodle", "非油炸方便面", "Air-dried Instant Noodles",
         "非油炸面饼，骨汤浓郁，加班宵夜",
         "Air-dried noodles in a rich bone broth for late nights",
         ["方便面", "宵夜", "速食"], ["instant noodles", "late-night", "quick meal"]),
        ("protein", "乳清蛋白粉", "Whey Protein Powder",
         "每份25克蛋白，健身增肌，低脂低糖",
         "25 g protein per serving for muscle gain, low fat and low sugar",
         ["蛋白粉", "健身", "增肌"], ["protein", "fitness", "muscle"]),
    ]),
    "power": ("充电配件", (49, 599), False, [
        ("powerbank", "大容量充电宝", "High-capacity Power Bank",
         "20000mAh大容量，给手机充4次，出差旅行续航无忧",
         "20,000 mAh charges a phone four times; no more battery worries on trips",
         ["充电宝", "续航", "大容量"], ["power bank", "battery", "high capacity"]),
        ("fast", "氮化镓快充充电器", "GaN Fast Charger",
         "65W氮化镓，手机电脑一头充，小巧便携",
         "65 W GaN charger for phone and laptop in one, small enough for a pocket",
         ["快充", "充电器", "氮化镓"], ["fast charging", "charger", "GaN"]),
        ("magsafe", "磁吸无线充电宝", "Magnetic Wireless Battery Pack",
         "磁吸贴合手机背面，边用边充，延长续航",
         "Snaps onto the back of the phone and charges while you use it, extending battery life",
         ["无线充", "磁吸", "续航"], ["wireless charging", "magnetic", "battery pack"]),
        ("cable", "编织快充数据线", "Braided Fast-charging Cable",
         "尼龙编织耐弯折，100W快充，数据传输稳定",
         "Braided nylon survives bending, 100 W fast charging and stable data transfer",
         ["数据线", "快充", "耐用"], ["cable", "fast charging", "durable"]),
        ("station", "户外移动电源", "Portable Power Station",
         "1000Wh储能，露营自驾供电，可带电饭煲电脑",
         "1,000 Wh of storage for camping and road trips; runs a rice cooker or a laptop",
         ["户外电源", "露营", "储能"], ["power station", "camping", "energy storage"]),
    ]),
}

SERIES = ["X", "S", "Pro", "Air", "Max", "Neo", "Lite", "Ultra", "One", "Go"]


def make_items() -> list[dict]:
    rng = random.Random(20261127)
    items = []
    for cat, (zh_name, (lo, hi), rebuyable, points) in C.items():
        n = 0
        for point in points:
            key, zh_t, en_t, zh_d, en_d, zh_tags, en_tags = point
            for brand, lang in BRANDS[cat]:  # every brand sells its take on every selling point
                n += 1
                model = f"{rng.choice(SERIES)}{rng.randint(2, 9)}"
                zh = lang == "zh"
                title = f"{brand} {model} {zh_t if zh else en_t}"
                desc = zh_d if zh else en_d
                price = round(rng.uniform(lo, hi) / 10) * 10 - 1
                items.append({
                    "id": f"{cat}-{n:03d}",
                    "title": title,
                    "description": desc,
                    "category": [cat, key],
                    "brand": brand,
                    "tags": zh_tags if zh else en_tags,
                    "attributes": {"卖点" if zh else "highlight": (zh_tags if zh else en_tags)[0]},
                    "price": float(price),
                    "rating": round(rng.uniform(3.6, 4.9), 1),
                    "stock": rng.choice([0, 3, 12, 40, 120, 500]) if rng.random() < 0.15 else rng.randint(5, 800),
                    "language": lang,
                    "created_at": float(EPOCH - rng.randint(0, 120) * 86400),
                    "rebuyable": rebuyable,
                })
    return items


def main() -> None:
    items = make_items()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    cats = {it["category"][0] for it in items}
    print(f"wrote {len(items)} items in {len(cats)} categories to {OUT}")


if __name__ == "__main__":
    main()
